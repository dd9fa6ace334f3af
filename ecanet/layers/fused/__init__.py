"""The fused tail: a block's last BatchNorm, its attention (ECA, SE, CBAM or none), the residual addition and
the activation as one step, equal in value and gradient to ``act(attention(norm(x)) + identity)`` with less
memory traffic and, for channel gates, no extra activation kept for backward. A CPU optimisation the blocks
apply to the plain formulation on CPU tensors only (``switch``: the device policy), to every attention alike so that a model and its attention-free twin are
measured like with like. One job per module: ``statistics`` (BatchNorm's statistics and running-stat
update), ``kernels`` (the low-level kernels, each with its reference), ``function`` (the training steps'
autograd Functions and their derivation), ``inference`` (inference and torch.compile), ``cbam`` (CBAM's
tail), ``switch`` (when it runs). docs/fast-path.md measures it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..cbam import CBAM
from .cbam import cbam_tail
from .function import NormGateResidual, add_act_, gate_parameters
from .inference import affine_step
from .statistics import is_fusable_norm, norm_parameters, uses_running_stats
from .switch import DEFAULT_DEVICES, fast_path_applies, fuses_on, plain_formulation, set_fused

__all__ = [
    "DEFAULT_DEVICES",
    "fast_path_applies",
    "fuses_on",
    "fused_tail",
    "is_fusable_norm",
    "plain_formulation",
    "set_fused",
    "uses_running_stats",
]


def _plain_tail(attention: nn.Module | None, norm: nn.Module, x: Tensor, identity: Tensor | None, relu: bool) -> Tensor:
    """The plain formulation of the tail, module by module: for an empty batch, which its modules accept."""
    out = norm(x) if attention is None else attention(norm(x))
    out = out if identity is None else out + identity
    return out.relu() if relu else out


def fused_tail(
    attention: nn.Module | None,
    norm: nn.Module,
    x: Tensor,
    identity: Tensor | None = None,
    relu: bool = True,
    inplace: bool = False,
) -> Tensor:
    """``act(attention(norm(x)) + identity)`` where act is ReLU (``relu=True``) or nothing and attention is
    ECA (or a variant), SE, CBAM or None.

    ``norm`` is the BatchNorm before the attention (``is_fusable_norm``). ``inplace`` lets the result
    overwrite x when no gradient is recorded (blocks pass their convolution's output, which nothing else
    reads).
    """
    if not is_fusable_norm(norm):
        raise TypeError(f"fused_tail: cannot fuse {type(norm).__name__}; use the plain formulation")
    if attention is not None:
        attention.check_input(x)
    if x.numel() == 0:  # ATen's BatchNorm reductions divide by the count (a floating-point trap on CPU)
        return _plain_tail(attention, norm, x, identity, relu)
    inplace = inplace and not torch.is_grad_enabled()
    if isinstance(attention, CBAM):
        return cbam_tail(attention, norm, x, identity, relu, inplace)
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        if attention is None:
            return add_act_(norm(x), identity, relu)
        params = (*norm_parameters(norm), *gate_parameters(attention))
        return NormGateResidual.apply(x, identity, relu, norm, attention, *params)
    return affine_step(attention, norm, x, identity, relu, inplace)
