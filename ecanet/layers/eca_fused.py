"""The fast ECA path: gate, residual addition and ReLU in one step that keeps no extra activation.

Same maths as ``relu(x * s + identity)`` with s = ECA(x)'s weights, but:
- the result is written into x's buffer (x is the last BatchNorm's output, which nothing else keeps:
  BatchNorm's backward needs its input, not its output), so no fresh full-size tensor is allocated;
- backward needs only y (the output), identity (which the next layer keeps anyway), the pooled vector and
  s; the plain formulation also keeps x for the product's backward. Where y > 0, x * s = y - identity.
- the gradient of the pooling is folded into the same pass as the gradient of the product.

Under torch.compile the plain formulation is used instead: Inductor fuses it into one kernel by itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .eca import ECA, broadcast_channels, spatial_mean


class _ECAResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, identity: Tensor | None, relu: bool, eca: ECA, *params: Tensor) -> Tensor:
        pooled = spatial_mean(x)
        s = eca.gate(pooled)
        sb = broadcast_channels(s, x)
        y = x.mul_(sb) if identity is None else torch.addcmul(identity, x, sb, out=x)
        if relu:
            y.relu_()
        ctx.mark_dirty(x)
        ctx.relu, ctx.eca = relu, eca
        dev = x.device.type
        ctx.autocast = (torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))  # replayed in backward
        ctx.save_for_backward(y, identity, pooled, s)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        y, identity, pooled, s = ctx.saved_tensors
        if ctx.relu:
            g = torch.ops.aten.threshold_backward(g, y, 0)  # ReLU's own backward: g where y > 0, else 0
        # One fresh buffer serves first as scratch for the dot products, then as d x; writing into memory
        # already touched is much cheaper on CPU than allocating a second full-size tensor.
        dx = torch.empty_like(y)
        # d s = sum_hw(g * x) = sum_hw(g * x * s) / s, and x * s = y - identity wherever g != 0.
        xs = y if identity is None else torch.sub(y, identity, out=dx)
        ds = torch.mul(g, xs, out=dx).sum(
            dim=tuple(range(2, y.ndim)), dtype=torch.promote_types(y.dtype, torch.float32)
        )
        ds = torch.where(s > 0, ds / s.to(ds.dtype), 0).to(s.dtype)  # where s == 0 the gate's slope is 0 too
        enabled, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(y.device.type, dtype=dtype, enabled=enabled):
            pooled_ = pooled.detach().requires_grad_()
            grads = torch.autograd.grad(ctx.eca.gate(pooled_), [pooled_, *ctx.eca.parameters()], ds)
        d_pooled, d_params = grads[0], grads[1:]
        spatial = y[0, 0].numel()
        # d x = g * s + d_pooled / HW: the product's and the pooling's gradients in one pass
        torch.addcmul(broadcast_channels(d_pooled / spatial, y), g, broadcast_channels(s, y), out=dx)
        return (dx, None if identity is None else g, None, None, *d_params)


def eca_residual(eca: ECA, x: Tensor, identity: Tensor | None = None, relu: bool = True) -> Tensor:
    """``act(eca(x) + identity)`` where act is ReLU (``relu=True``) or nothing; x is overwritten.

    x must be a tensor nothing else needs (a BatchNorm output). Equal in value and gradient to the plain
    formulation; less memory traffic and one full-size activation less kept for backward.
    """
    eca.check_input(x)
    if torch.compiler.is_compiling():
        out = eca(x) if identity is None else torch.addcmul(identity, x, broadcast_channels(eca.attention(x), x))
        return out.relu() if relu else out
    if not torch.is_grad_enabled():
        s = broadcast_channels(eca.gate(spatial_mean(x)), x)
        y = x.mul_(s) if identity is None else torch.addcmul(identity, x, s, out=x)
        return y.relu_() if relu else y
    return _ECAResidual.apply(x, identity, relu, eca, *eca.parameters())
