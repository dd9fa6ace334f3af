"""The fused step as plain tensor operations, for inference and torch.compile.

With its statistics known, BatchNorm is an affine map per channel, so ``act(gate(norm(x)) + identity)`` is
``act(x * (scale * s) + shift * s + identity)`` with per-(sample, channel) coefficients, and the gate's
pooled descriptor is mean_S(x) * scale + shift: no BatchNorm output is needed. Without attention, s = 1 and
the coefficients are per channel. In eager inference the step is two passes (the map with the identity,
then the shift with the ReLU) and may overwrite x; bf16/fp16 maps on a CPU take BatchNorm's kernel for the
affine map (without a gate, with the norm's own statistics). Under torch.compile Inductor generates the
fused kernels and the backward from these operations; custom autograd code would only hide the maths from
it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..eca import broadcast_channels
from .function import add_act_
from .kernels import add_relu_, cast, normalize, scale_shift
from .statistics import affine, statistics, uses_running_stats


def affine_step(
    attention: nn.Module | None,
    norm: nn.Module,
    x: Tensor,
    identity: Tensor | None,
    relu: bool,
    inplace: bool,
) -> Tensor:
    """act(x * scale * s + shift * s + identity) for a channel gate (ECA, SE; s = 1 without attention),
    into x itself when ``inplace``."""
    narrow = _narrow_on_cpu(x) and not torch.compiler.is_compiling()
    if narrow and attention is None and uses_running_stats(norm):
        # Nothing to gate: BatchNorm's kernel with the norm's own statistics, one call where computing the
        # coefficients first takes a dozen (the plain formulation's passes, without its fresh tensor).
        y = normalize(x, norm.weight, norm.bias, norm.running_mean, norm.running_var, norm.eps, _out(x, inplace))
        return add_act_(y, identity, relu)
    stats = statistics(norm, x, per_sample=attention is not None)
    scale, shift = affine(norm, stats.mean, (stats.var + norm.eps).rsqrt())
    if attention is not None:
        s = attention.gate(cast(torch.addcmul(shift, stats.mean_nc, scale), x.dtype))
        scale, shift = scale * s, shift * s
    out = x if inplace else None
    if torch.compiler.is_compiling():
        # One stacked tensor: Inductor computes a stack once, in the gate's small kernel, instead of inlining
        # two products (and BatchNorm's rsqrt) into the full-size kernel for every element.
        a, b = torch.stack((scale, shift)).to(x.dtype)
        return scale_add(x, a, b, identity, relu, out)
    if narrow:
        # BatchNorm's kernel over the flat view reads a bf16/fp16 x with the fp32 coefficients in one
        # vectorised pass; ``addcmul`` broadcasting narrow coefficients over small maps is not vectorised.
        return add_act_(scale_shift(x, scale, shift, _out(x, inplace)), identity, relu)
    return scale_add(x, cast(scale, x.dtype), cast(shift, x.dtype), identity, relu, out)


def _narrow_on_cpu(x: Tensor) -> bool:
    """Whether x is a bf16/fp16 tensor on a CPU (where BatchNorm's kernel paths pay)."""
    return x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16)


def _out(x: Tensor, inplace: bool) -> Tensor:
    return x if inplace else torch.empty_like(x)


def scale_add(x: Tensor, a: Tensor, b: Tensor, identity: Tensor | None, relu: bool, out: Tensor | None) -> Tensor:
    """act(x * a + b + identity) with (N, C) coefficients a and b, into ``out`` (None: a new tensor).

    The coefficients come before x in the argument lists on purpose: Inductor's locality pass places each
    operation's producers right before it in argument order, so with x last the block's last convolution
    runs after the gate, and the pooling of that convolution's input fuses into the kernel that writes it.
    """
    a = broadcast_channels(a, x)
    y = torch.mul(a, x, out=out) if identity is None else torch.addcmul(identity, a, x, out=out)
    b = broadcast_channels(b, x)
    return add_relu_(y, b) if relu else y.add_(b)
