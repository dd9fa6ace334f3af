"""Freezing: BatchNorm with statistics and affine parameters fixed, as detection backbones and small-batch
fine-tuning use (torchvision provides the layer, ``FrozenBatchNorm2d``, but no converter for a built model),
and parameters of the stem and first stages fixed."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` (in place) by a FrozenBatchNorm2d with its current values."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        replacement = freeze_batchnorm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def freeze_parameters(stem: Sequence[nn.Module], stages: Sequence[nn.Module], n: int, with_stem: bool) -> None:
    """Fix the parameters of the stem (if ``with_stem``) and of the first ``n`` stages; each backbone's
    ``freeze_stages`` says which modules are its stem and stages."""
    if not 0 <= n <= len(stages):
        raise ValueError(f"freeze_stages: expected 0..{len(stages)} stages, got {n}")
    for module in [*(stem if with_stem else []), *stages[:n]]:
        for p in module.parameters():
            p.requires_grad_(False)
