"""Put ECA into CNNs users already have, at the paper's position: on the residual branch after its last
BatchNorm, before the addition (ResNet-like blocks), or after the projection BatchNorm (inverted residuals);
or, for any other network (YOLO necks, custom nets), after the modules named by glob patterns.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models import mobilenetv2 as tv_mnv2
from torchvision.models import mobilenetv3 as tv_mnv3
from torchvision.models import resnet as tv_resnet

from .layers import ECA, is_attention
from .models.resnet import AttentionBlock


def _timm_blocks() -> tuple[type, ...]:
    """timm's ResNet blocks (they take attention through their ``se`` slot), if timm is loaded: a timm model
    can only exist once it is, so timm (an optional extra) is never imported here."""
    timm_resnet = sys.modules.get("timm.models.resnet")
    return (timm_resnet.BasicBlock, timm_resnet.Bottleneck) if timm_resnet is not None else ()


class Site(NamedTuple):
    block: str
    channels: int
    kernel_size: int
    params: int


@dataclass
class AttachReport:
    """Where ECA went: one Site per insertion."""

    sites: list[Site] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(s.params for s in self.sites)

    def __str__(self) -> str:
        rows = [f"{s.block}: C={s.channels}, k={s.kernel_size}" for s in self.sites]
        return "\n".join(rows + [f"{len(self.sites)} ECA layers, {self.params} parameters"])


class _AttentionHook:
    """Forward hook that applies attention to the output of a block's last BatchNorm.

    torchvision's blocks have a fixed forward; a hook on their last BN puts ECA exactly where the paper
    does without renaming any existing parameter (the ECA weights appear as ``<block>.eca.conv.weight``).
    """

    def __init__(self, attention: nn.Module) -> None:
        self.attention = attention

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        return self.attention(output)


def _last_bn(block: nn.Module) -> nn.BatchNorm2d:
    return block.bn3 if hasattr(block, "bn3") else block.bn2


def _site(block: nn.Module) -> tuple[str, nn.Module] | None:
    """(how to insert, where) for a supported block, or None."""
    if isinstance(block, AttentionBlock):
        return "ecanet", _last_bn(block)
    if isinstance(block, _timm_blocks()):
        return "timm", _last_bn(block)
    if isinstance(block, (tv_resnet.BasicBlock, tv_resnet.Bottleneck)):
        return "hook", _last_bn(block)
    if isinstance(block, tv_mnv2.InvertedResidual):
        return "append", block.conv
    if isinstance(block, tv_mnv3.InvertedResidual):
        return "append", block.block
    return None


def _channels(target: nn.Module) -> int:
    if isinstance(target, nn.Sequential):  # inverted residual: ends in BN or Conv2dNormActivation(conv, bn)
        target = target[-1] if isinstance(target[-1], nn.BatchNorm2d) else target[-1][1]
    return target.num_features


def _has_attention(kind: str, block: nn.Module, target: nn.Module) -> bool:
    if kind == "ecanet":
        return block.attn_name is not None
    if kind == "timm":
        return block.se is not None
    if kind == "append":
        return is_attention(target[-1])
    return hasattr(block, "eca")


def _output_channels(model: nn.Module, targets: dict[str, nn.Module], input_size: Sequence[int]) -> dict[str, int]:
    """Each target's output channels: read off the module (``out_channels``, ``num_features``), else from one
    forward of a zero input of ``input_size`` (C, H, W) without autograd."""
    channels = {n: getattr(m, "out_channels", None) or getattr(m, "num_features", None) for n, m in targets.items()}
    unknown = {n: targets[n] for n, c in channels.items() if not isinstance(c, int)}
    if unknown:
        seen: dict[str, int] = {}

        def record(name: str):
            def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:  # None: the output stays
                seen.setdefault(name, output.shape[1])

            return hook

        hooks = [m.register_forward_hook(record(n)) for n, m in unknown.items()]
        ref, training = next(model.parameters(), None), model.training
        x = torch.zeros(1, *input_size, device=ref.device if ref is not None else None)
        try:
            with torch.no_grad():  # in eval mode: BatchNorm's running statistics stay as they are
                model.eval()(x)
        finally:
            model.train(training)
            for h in hooks:
                h.remove()
        for n in unknown:
            if n not in seen:
                raise ValueError(f"attach_eca: where= matched {n!r}, which one forward of {tuple(x.shape)} never ran")
            channels[n] = seen[n]
    return channels


def _attach_where(model: nn.Module, where: Sequence[str], make_eca, input_size: Sequence[int]) -> AttachReport:
    """ECA after the output of every module whose name matches a pattern of ``where``."""
    names = [n for n, _ in model.named_modules() if n]
    targets: dict[str, nn.Module] = {}
    for pattern in where:
        matched = fnmatch.filter(names, pattern)
        if not matched:
            raise ValueError(f"attach_eca: where= pattern {pattern!r} matches no module of {type(model).__name__}")
        targets |= {n: model.get_submodule(n) for n in matched}
    report = AttachReport()
    for name, channels in _output_channels(model, targets, input_size).items():
        module = targets[name]
        if hasattr(module, "eca") or (isinstance(module, nn.Sequential) and is_attention(module[-1])):
            raise ValueError(f"attach_eca: {name!r} already has ECA")
        eca = make_eca(channels, module)
        if isinstance(module, nn.Sequential):  # a layer of its own, at the end
            module.append(eca)
        else:  # a child (weights under <name>.eca) applied to the module's output
            module.eca = eca
            module.register_forward_hook(_AttentionHook(eca))
        report.sites.append(Site(name, channels, eca.kernel_size, sum(p.numel() for p in eca.parameters())))
    return report


def attach_eca(
    model: nn.Module,
    kernel_size: int | None = None,
    gamma: float = 2,
    beta: float = 1,
    padding: str = "zeros",
    shared: bool = True,
    where: Sequence[str] | None = None,
    input_size: Sequence[int] = (3, 224, 224),
) -> AttachReport:
    """Insert ECA in place into every supported block of ``model`` and report where it went.

    Supported: torchvision ResNet/ResNeXt/Wide-ResNet blocks, torchvision MobileNetV2/V3 inverted residuals,
    timm ResNet blocks and this package's blocks. ``kernel_size=None`` picks the adaptive size per block.
    Existing weights are untouched. Raises ValueError when no block is supported or a block already has
    attention.

    ``where``: glob patterns over module names (``["backbone.*.cv2", "neck.*"]``) for any other network: ECA
    goes after each matched module's output, its channels read off the module or from one forward of a zero
    input of ``input_size``; its weights are ``<name>.eca.conv.weight`` (``<name>.<last>`` for a Sequential,
    to which it is appended). A pattern that matches nothing is an error naming it.
    """

    def make_eca(channels: int, near: nn.Module) -> ECA:
        eca = ECA(channels, kernel_size, gamma, beta, padding=padding, shared=shared)
        ref = next(near.parameters(), None)
        return eca.to(device=ref.device, dtype=ref.dtype) if ref is not None else eca

    if where is not None:
        return _attach_where(model, where, make_eca, input_size)
    report = AttachReport()
    for name, block in list(model.named_modules()):
        found = _site(block)
        if found is None:
            continue
        kind, target = found
        if _has_attention(kind, block, target):
            raise ValueError(f"attach_eca: block {name!r} ({type(block).__name__}) already has attention")
        channels = _channels(target)
        eca = make_eca(channels, block)
        if kind == "ecanet":
            block.attn_name = "eca"
            block.eca = eca
        elif kind == "timm":
            block.se = eca
        elif kind == "append":
            target.append(eca)
        else:
            block.eca = eca
            target.register_forward_hook(_AttentionHook(eca))
        report.sites.append(Site(name, channels, eca.kernel_size, sum(p.numel() for p in eca.parameters())))
    if not report.sites:
        raise ValueError(
            f"attach_eca: {type(model).__name__} has no supported block (ResNet Basic/Bottleneck blocks of "
            "torchvision, timm or ecanet; MobileNetV2/V3 inverted residuals): name where ECA goes with where=[...], "
            "or swap its SE modules with replace_se"
        )
    return report
