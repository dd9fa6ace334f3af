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
    d_pooled     = the gate's backward of ds (``gate_vjp``: written out for ECA, autograd for others)
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
added), and every reduction comes from the two per-(sample, channel) sums of ``channel_sums``. Double
backward is not supported.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .kernels import add_relu_, channel_sums, per_channel, relu_backward, scale_shift
from .statistics import accumulation_dtype, affine, norm_parameters, statistics


class NormGateResidual(torch.autograd.Function):
    """``act(attention(norm(x)) + identity)`` in training, for a channel gate (a module with
    ``gate(pooled) -> weights``, both (N, C)); see the module docstring for the derivation."""

    @staticmethod
    def forward(
        ctx, x: Tensor, identity: Tensor | None, relu: bool, norm: nn.Module, attention: nn.Module, *params: Tensor
    ):
        acc = accumulation_dtype(x.dtype)  # per-channel arithmetic in >= fp32
        stats = statistics(norm, x)
        mean, invstd = stats.mean.to(acc), (stats.var.to(acc) + norm.eps).rsqrt()
        scale, shift = (v.to(acc) for v in affine(norm, mean, invstd))
        x_centred = stats.mean_nc - mean
        pooled = scale * x_centred if norm.bias is None else torch.addcmul(norm.bias.to(acc), scale, x_centred)
        pooled, xhat_mean = pooled.to(x.dtype), x_centred * invstd
        ctx.gate = gate_vjp(attention, pooled)  # the weights s and their backward
        sd = ctx.gate[0].to(acc)
        y = scale_shift(x, scale * sd, shift * sd, out=torch.empty_like(x))  # s * z, the one new buffer
        if identity is not None:
            y = add_relu_(y, identity) if relu else y.add_(identity)
        elif relu:
            y = y.relu_()
        ctx.relu, ctx.batch, ctx.has_identity = relu, stats.batch, identity is not None
        ctx.norm_params = bool(norm_parameters(norm))  # an affine BatchNorm's weight and bias
        ctx.save_for_backward(x, y, mean, invstd, scale, xhat_mean, norm.weight, norm.bias)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, y, mean, invstd, scale, xhat_mean, weight, bias = ctx.saved_tensors
        if ctx.relu:
            g = relu_backward(g, y)
        # Few operator calls: on small maps each costs more than its arithmetic (docs/benchmarks.md).
        acc, positions = mean.dtype, math.prod(x.shape[2:])
        dx = torch.empty_like(x)  # the one new full-size buffer (scratch for channel_sums first, maybe)
        g_sum, g_xhat = channel_sums(g, x, mean, invstd, dx)
        ds = g_xhat if weight is None else g_xhat * weight.to(acc)
        ds = ds if bias is None else torch.addcmul(ds, bias.to(acc), g_sum)
        s, vjp = ctx.gate
        d_pooled, d_gate = vjp(ds.to(s.dtype))
        d_pooled, s = d_pooled.to(acc), s.to(acc)

        d_bias = torch.addcmul(d_pooled, s, g_sum).sum(0)
        d_weight = torch.addcmul(s * g_xhat, d_pooled, xhat_mean).sum(0)
        g_coef = scale * s
        if ctx.batch:  # the batch's mean and variance depend on x too
            count = positions * x.shape[0]
            x_coef = scale * invstd * d_weight * (-1 / count)
            offset = torch.add(d_pooled / positions, d_bias, alpha=-1 / count).mul_(scale)
            offset.addcmul_(x_coef, mean, value=-1)
            # x's terms, which cancel where the mean is large, with >= fp32 coefficients (one pass); then
            # g's, its coefficient in g's dtype: an operator mixing bf16 with fp32 copies both tensors.
            scale_shift(x, x_coef.expand_as(offset), offset, out=dx)
            dx.addcmul_(g, per_channel(g_coef.to(g.dtype), g))
        else:
            scale_shift(g, g_coef, d_pooled * (scale / positions), out=dx)
        d_norm = (d_weight.to(weight.dtype), d_bias.to(bias.dtype)) if ctx.norm_params else ()
        return (dx, g if ctx.has_identity else None, None, None, None, *d_norm, *d_gate)


def gate_parameters(attention: nn.Module) -> list[Tensor]:
    """The parameters ``gate_vjp`` gives gradients for, in its order: the attention's own
    ``gate_parameters()`` where it has them (read directly, cheaper than walking the module tree), else all
    of its parameters."""
    own = getattr(attention, "gate_parameters", None)
    return own() if own is not None else list(attention.parameters())


def gate_vjp(attention: nn.Module, pooled: Tensor) -> tuple[Tensor, Callable[[Tensor], tuple[Tensor, list[Tensor]]]]:
    """The gate's weights s = attention.gate(pooled) and its vector-Jacobian product, a function from dL/ds
    to (dL/d(pooled), [dL/d(parameter)...]): the attention's own ``gate_vjp`` where it has one (ECA),
    otherwise autograd over the gate's small graph, recorded here rather than recomputed in backward."""
    if hasattr(attention, "gate_vjp"):
        return attention.gate_vjp(pooled)
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
