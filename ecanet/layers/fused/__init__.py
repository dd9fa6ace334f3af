"""The fused ECA step: a block's last BatchNorm, the ECA gate, the residual addition and the activation as
one step, equal in value and gradient to ``act(eca(norm(x)) + identity)`` with less memory traffic and no
extra activation kept for backward. An optimisation the blocks apply to the plain formulation, one job per
module: ``statistics`` (BatchNorm's statistics and running-stat update), ``kernels`` (the low-level kernels,
each with its reference), ``function`` (the training step's autograd Function and its derivation),
``inference`` (inference and torch.compile), ``switch`` (when it runs). docs/fast-path.md measures it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..eca import ECA
from .function import NormECAResidual
from .inference import affine_step
from .statistics import is_fusable_norm, uses_running_stats
from .switch import fast_path_applies, plain_formulation, set_fused

__all__ = [
    "eca_residual",
    "fast_path_applies",
    "is_fusable_norm",
    "plain_formulation",
    "set_fused",
    "uses_running_stats",
]


def eca_residual(
    eca: ECA,
    norm: nn.Module,
    x: Tensor,
    identity: Tensor | None = None,
    relu: bool = True,
    x_mean: Tensor | None = None,
    inplace: bool = False,
) -> Tensor:
    """``act(eca(norm(x)) + identity)`` where act is ReLU (``relu=True``) or nothing.

    ``norm`` is the BatchNorm before the attention (``is_fusable_norm``). ``x_mean``, x's spatial mean if
    the caller has it more cheaply than by reading x, is used where ``norm`` runs on running statistics
    without autograd through this function (inference, torch.compile). ``inplace`` lets the result
    overwrite x when no gradient is recorded (blocks pass their convolution's output, which nothing else
    reads).
    """
    if not is_fusable_norm(norm):
        raise TypeError(f"eca_residual: cannot fuse {type(norm).__name__}; use the plain formulation")
    eca.check_input(x)
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        return NormECAResidual.apply(x, identity, relu, norm, eca, *norm.parameters(), *eca.parameters())
    return affine_step(eca, norm, x, identity, relu, x_mean, inplace and not torch.is_grad_enabled())
