"""The fused training steps as autograd Functions. ``NormGateResidual``: ``act(s * norm(x) + identity)`` with
a channel gate s = gate(mean_S(norm(x))) (ECA's or SE's), forward and backward written out so that nothing
full-size is kept beyond what a plain ResNet keeps (BatchNorm's input x and the block output y).
``AddReLU``: the addition and ReLU of a block without attention, one pass each way.

Forward, per sample n and channel c (S: the spatial positions, m = N * |S| per channel):
    x_hat = (x - mu) * r,  r = 1 / sqrt(var + eps)        mu, var: batch or running statistics
    z = w * x_hat + b = x * scale + shift                  BatchNorm, an affine map per channel
    p[n, c] = mean_S z = mean_S(x) * scale + shift         ECA's pooled descriptor, from x's spatial mean
    s = gate(p)                                            ECA: 1-D conv over channels + sigmoid; SE: MLP
    y = act(s * z + identity)                              act: ReLU or nothing

Backward, with G = dL/dy * act'(.) (ReLU's mask, read off y):
    ds[n, c]     = sum_S G * z = w * sum_S(G * x_hat) + b * sum_S(G)
    d_pooled     = the gate's backward of ds (``gate_vjp``: autograd over the gate's small graph)
    dz           = s * G + d_pooled / |S|                 the product's and the pooling's gradients
    d_bias[c]    = sum_{n,S} dz     = sum_n(s * sum_S G + d_pooled)
    d_weight[c]  = sum_{n,S} dz * x_hat = sum_n(s * sum_S(G * x_hat) + d_pooled * mean_S x_hat)
    dx           = scale * dz                                         (running statistics), or
    dx           = scale * (dz - d_bias / m - x_hat * d_weight / m)   (batch statistics: BatchNorm's rule)
Written per element, dx = g_coef * G + x_coef * x + offset with
    g_coef[n, c] = scale * s
    x_coef[c]    = -scale * r * d_weight / m                          (0 with running statistics)
    offset[n, c] = scale * d_pooled / |S| - scale * d_bias / m - x_coef * mu   (first term alone likewise)
so dx is one new buffer filled in one pass (with batch statistics two: x_coef * x + offset, then g_coef * G
added), and every reduction comes from the two per-(sample, channel) sums of ``channel_sums``. For bf16/fp16
maps with batch statistics, dz is written instead and BatchNorm's own backward makes dx from it (one
rounding of the three terms, which the two passes would round apart). Double backward is not supported.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..eca import broadcast_channels
from .kernels import add_relu_, batch_norm_backward, cast, channel_sums, relu_backward, scale_shift
from .statistics import accumulation_dtype, affine, norm_parameters, statistics


class NormGateResidual(torch.autograd.Function):
    """``act(attention(norm(x)) + identity)`` in training, for a channel gate (a module with
    ``gate(pooled) -> weights``, both (N, C)); see the module docstring for the derivation.

    On small maps each operator call costs more than its arithmetic (docs/fast-path.md), so both passes are
    written for few calls: per-(sample, channel) coefficients computed once and kept, casts only where the
    dtype differs.
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, identity: Tensor | None, relu: bool, norm: nn.Module, attention: nn.Module, *params: Tensor
    ):
        acc = accumulation_dtype(x.dtype)  # per-channel arithmetic in >= fp32
        stats = statistics(norm, x)
        mean, invstd = cast(stats.mean, acc), (cast(stats.var, acc) + norm.eps).rsqrt()
        scale, shift = (cast(v, acc) for v in affine(norm, mean, invstd))
        weight, bias = (None if v is None else cast(v, acc) for v in (norm.weight, norm.bias))
        x_centred = stats.mean_nc - mean  # each sample's mean about the channel's
        pooled = scale * x_centred if bias is None else torch.addcmul(bias, scale, x_centred)
        s, ctx.vjp = gate_vjp(attention, cast(pooled, x.dtype))  # the weights s and their backward
        ctx.gate_dtype, s = s.dtype, cast(s, acc)
        g_coef = scale * s  # s * z = x * g_coef + shift * s
        y = scale_shift(x, g_coef, shift * s, out=torch.empty_like(x))  # the one new buffer
        if identity is not None:
            y = add_relu_(y, identity) if relu else y.add_(identity)
        elif relu:
            y = y.relu_()
        ctx.relu, ctx.batch, ctx.has_identity, ctx.eps = relu, stats.batch, identity is not None, norm.eps
        # an affine BatchNorm's weight and bias (frozen BatchNorm keeps them as buffers)
        ctx.norm_dtype = norm.weight.dtype if norm_parameters(norm) else None
        ctx.save_for_backward(x, y, mean, invstd, scale, stats.mean_nc, x_centred, s, g_coef, weight, bias)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, y, mean, invstd, scale, mean_nc, x_centred, s, g_coef, weight, bias = ctx.saved_tensors
        if ctx.relu:
            g = relu_backward(g, y)
        positions = x.numel() // g_coef.numel()
        buffer = torch.empty_like(x)  # the one new full-size buffer (scratch for channel_sums first, maybe)
        g_sum, g_xc = channel_sums(g, x, mean_nc, x_centred, buffer)  # sum_S G, sum_S G * (x - mean)
        ds = scale * g_xc if bias is None else torch.addcmul(bias * g_sum, scale, g_xc)  # sum_S G * z
        d_pooled, d_gate = ctx.vjp(cast(ds, ctx.gate_dtype))
        d_pooled = cast(d_pooled, s.dtype)
        if ctx.batch and g.dtype in (torch.bfloat16, torch.float16):
            # dz into the buffer, then BatchNorm's own backward, which sums dx's three terms in fp32 and rounds
            # once. Two passes, as below, round x's terms to bf16 before g's are added, losing digits where
            # they cancel: the gradients behind an inverted residual's tail at 48 x 48 came 7x further from
            # fp64 than the plain formulation's (tests/layers/test_fused.py).
            dz = scale_shift(g, s, d_pooled * (1 / positions), out=buffer)
            dx, d_weight, d_bias = batch_norm_backward(dz, x, weight, mean, invstd)
        else:
            dx = buffer
            d_bias = torch.addcmul(d_pooled, s, g_sum).sum(0)
            d_weight = torch.addcmul(s * g_xc, d_pooled, x_centred).sum(0).mul_(invstd)
            if ctx.batch:  # the batch's mean and variance depend on x too
                n = x.shape[0]
                x_coef = (scale * invstd).mul_(d_weight).mul_(-1 / (n * positions))  # per channel
                offset = torch.add(d_pooled, d_bias, alpha=-1 / n).mul_(scale).mul_(1 / positions)
                offset.addcmul_(x_coef, mean, value=-1)
                # x's terms, which cancel where the mean is large, with >= fp32 coefficients (one pass); then
                # g's, in g's dtype (fp32/fp64 here).
                scale_shift(x, x_coef, offset, out=dx)
                dx.addcmul_(g, broadcast_channels(g_coef, g))
            else:
                scale_shift(g, g_coef, (d_pooled * scale).mul_(1 / positions), out=dx)
        d_norm = () if ctx.norm_dtype is None else (cast(d_weight, ctx.norm_dtype), cast(d_bias, ctx.norm_dtype))
        return (dx, g if ctx.has_identity else None, None, None, None, *d_norm, *d_gate)


def gate_parameters(attention: nn.Module) -> list[Tensor]:
    """The parameters ``gate_vjp`` gives gradients for, in ``parameters()`` order."""
    return list(attention.parameters())


def gate_vjp(attention: nn.Module, pooled: Tensor) -> tuple[Tensor, Callable[[Tensor], tuple[Tensor, list[Tensor]]]]:
    """The gate's weights s = attention.gate(pooled) and its vector-Jacobian product, a function from dL/ds
    to (dL/d(pooled), [dL/d(parameter)...]): autograd over the gate's small graph, recorded here rather than
    recomputed in backward."""
    params = gate_parameters(attention)
    with torch.enable_grad():
        pooled = pooled.detach().requires_grad_()
        s = attention.gate(pooled)

    def vjp(ds: Tensor) -> tuple[Tensor, list[Tensor]]:
        # retain_graph: backward may run more than once over a retained outer graph (e.g. gradcheck)
        d_pooled, *d_params = torch.autograd.grad(s, [pooled, *params], ds, retain_graph=True)
        return d_pooled, d_params

    return s.detach(), vjp


class AddReLU(torch.autograd.Function):
    """relu(z + identity) into z: the tail of a block without attention after its BatchNorm. One pass
    forward (``add_relu_``) where the plain formulation makes two, and ReLU's usual backward: the gradient
    where the output is positive, for both operands. z must be a fresh tensor (BatchNorm's output)."""

    @staticmethod
    def forward(ctx, z: Tensor, identity: Tensor) -> Tensor:
        y = add_relu_(z, identity)
        ctx.mark_dirty(z)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        (y,) = ctx.saved_tensors
        g = relu_backward(g, y)
        return g, g


def add_act_(y: Tensor, identity: Tensor | None, relu: bool) -> Tensor:
    """act(y + identity) into y, a fresh tensor (BatchNorm's or the step's output): the one add-then-ReLU of
    the fused tails, through ``AddReLU`` where autograd records."""
    if identity is None:
        return y.relu_() if relu else y
    if not relu:
        return y.add_(identity)
    return AddReLU.apply(y, identity) if torch.is_grad_enabled() else add_relu_(y, identity)
