"""CBAM's fused tail: ``act(cbam(norm(x)) + identity)`` with fewer passes than the modules one by one.

CBAM's spatial half weighs every position by a map computed from the channel-gated tensor, so, unlike a
channel gate, the tail cannot become one affine map per (sample, channel). What fuses: the last product,
the addition and the activation (``addcmul`` then ReLU in place, instead of three passes); and without
autograd also BatchNorm into the channel gate. With known statistics BatchNorm is z = x * scale + shift,
so the pooled descriptors come from x (the mean as for ECA; the maximum from x's maximum, or its minimum
where scale < 0) and the channel-gated tensor is one affine pass over x, written into x itself when
``inplace``: BatchNorm's output is never made.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..cbam import CBAM
from ..eca import broadcast_channels
from .kernels import cast, scale_shift
from .statistics import affine, statistics


def _channel_gated(cbam: CBAM, norm: nn.Module, x: Tensor, inplace: bool) -> Tensor:
    """cbam's channel half applied to norm(x), from x (see the module docstring)."""
    stats = statistics(norm, x)
    scale, shift = affine(norm, stats.mean, (stats.var + norm.eps).rsqrt())
    low, high = torch.aminmax(x.flatten(2), dim=2)
    peak = torch.where(scale >= 0, high * scale, low * scale) + shift  # max over positions of x * scale + shift
    s = cbam.channel_gate(cast(stats.mean_nc * scale + shift, x.dtype), cast(peak, x.dtype))
    a, b = cast(scale * s, x.dtype), cast(shift * s, x.dtype)
    if torch.compiler.is_compiling():  # plain operations, which Inductor fuses
        return x * broadcast_channels(a, x) + broadcast_channels(b, x)
    return scale_shift(x, a, b, out=x if inplace else torch.empty_like(x))


def cbam_tail(cbam: CBAM, norm: nn.Module, x: Tensor, identity: Tensor | None, relu: bool, inplace: bool) -> Tensor:
    """``act(cbam(norm(x)) + identity)``; ``inplace`` lets the result overwrite x (no autograd only)."""
    if torch.is_grad_enabled():  # autograd through the modules; the last product, addition and act fuse
        gated = cbam.channel_half(norm(x))
    else:
        gated = _channel_gated(cbam, norm, x, inplace)
    spatial = cbam.spatial_gate(gated)
    out = None if torch.is_grad_enabled() else gated
    y = torch.mul(gated, spatial, out=out) if identity is None else torch.addcmul(identity, gated, spatial, out=out)
    return y.relu_() if relu else y
