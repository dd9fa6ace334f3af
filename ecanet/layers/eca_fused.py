"""The fast ECA path: the block's last BatchNorm, the ECA gate, the residual addition and the ReLU as one
step, with the same maths as ``relu(eca(bn(x)) + identity)`` but less memory traffic and no extra
activation kept for backward.

- In training, forward computes BatchNorm's batch statistics from x's per-(sample, channel) mean (which
  the pooled descriptor needs anyway) and one reduction, then writes BatchNorm, the gate, the addition and
  the ReLU in two passes into one fresh buffer, where BatchNorm's output would go: no full-size tensor
  beyond the ones plain ResNet allocates.
- Backward keeps what plain ResNet keeps anyway (BatchNorm's input x, the block output y) plus per-channel
  vectors. The plain formulation also keeps the pre-gate tensor for the product's backward, and the
  shortcut tensor where it is a downsampling BatchNorm's output.
- Backward computes BatchNorm's, the gate's and the pooling's gradients together: with G the gradient
  after the ReLU, the gradient at the BatchNorm output is dz = s * G + d_pooled / HW, and every reduction
  BatchNorm's backward needs follows from two per-(sample, channel) sums, sum_hw(G) and
  sum_hw(G * (x - mean)). So d x = alpha * G + beta * x + delta with per-channel coefficients: one new
  buffer, as many as plain ResNet's BatchNorm backward allocates (on a CPU a fresh full-size buffer costs
  far more than a pass over memory already touched).

Without autograd through the step (inference), and under torch.compile, the step is plain tensor operations
instead (``_affine_step``): once its statistics are known BatchNorm is an affine map per channel, so
act(x * scale * s + shift * s + identity) needs no BatchNorm output at all, and in eager inference the
blocks let it overwrite their convolution's output. Inductor generates fused kernels and the backward from
the same operations; custom autograd code would only hide the maths from it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .eca import ECA, broadcast_channels

FUSED_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, FrozenBatchNorm2d)


def is_fusable_norm(norm: nn.Module) -> bool:
    """Whether ``eca_residual`` can run ``norm`` inside the fused step (BatchNorm and frozen BatchNorm;
    SyncBatchNorm and other norms take the plain formulation)."""
    return isinstance(norm, FUSED_NORMS)


def _per_channel(v: Tensor, x: Tensor) -> Tensor:
    """View a (C,) vector so that it broadcasts against x of shape (N, C, *S)."""
    return v.view(-1, *([1] * (x.ndim - 2)))


def uses_running_stats(norm: nn.Module) -> bool:
    """Whether ``norm`` normalises with fixed running statistics (eval mode, or frozen), i.e. is an affine
    map per channel."""
    return isinstance(norm, FrozenBatchNorm2d) or not (norm.training or norm.running_mean is None)


def _batch_norm_step(norm: nn.Module) -> tuple[bool, bool, float]:
    """nn.BatchNorm's bookkeeping for one forward (torch.nn.modules.batchnorm): whether it normalises with
    the batch's statistics, whether it updates running ones, and the momentum of that update."""
    factor = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
    batch = not uses_running_stats(norm)
    track = norm.track_running_stats and norm.running_mean is not None
    return batch, batch and norm.training and track, factor


def _batch_variance(x: Tensor, mean: Tensor) -> Tensor:
    """The biased variance per channel over the batch and space, given its mean: sum(x * (x - mean)) / count
    (= sum((x - mean)^2) / count) from BatchNorm's own backward reduction with x as both the gradient and the
    input, one pass that writes nothing full-size, in any layout BatchNorm takes. BatchNorm's forward
    computes the same statistics in a slower pass (about 10 ms against 1 ms on a stage-1 tensor of ResNet-50
    here), and ``torch.var_mean`` per channel is a Welford reduction slower still in eager mode."""
    ones = torch.ones_like(mean)
    _, sum_x_centred, _ = torch.ops.aten.native_batch_norm_backward(
        x, x, ones, None, None, mean, ones, True, 0.0, [False, True, False]
    )
    var = sum_x_centred / (x.numel() // x.shape[1])
    # sum(x * (x - mean)) also holds mean * sum(x - mean), the rounding of the mean times the count: a
    # relative error of about eps * (mean / std)^2. Where a channel's mean exceeds 30 std (over 5e-5 in
    # fp32), take the two-pass variance. Checked on CPU only: a GPU would have to wait for the check.
    if x.device.type == "cpu" and bool((var * 900 < mean * mean).any()):
        var = torch.var(x.to(mean.dtype), dim=(0, *range(2, x.ndim)), correction=0)
    return var


def _statistics(norm: nn.Module, x: Tensor, x_mean: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, bool]:
    """x's spatial mean per (sample, channel) (``x_mean`` if given, with running statistics), the
    per-channel mean and variance ``norm`` normalises with, and whether those are the batch's; with batch
    statistics, running ones are updated as BatchNorm does. Means and variances are in >= fp32."""
    dims, acc = tuple(range(2, x.ndim)), torch.promote_types(x.dtype, torch.float32)
    if isinstance(norm, FrozenBatchNorm2d):
        batch, update, factor = False, False, 0.0
    else:
        norm._check_input_dim(x)
        batch, update, factor = _batch_norm_step(norm)
    if not batch:
        mean_nc = x.mean(dims, dtype=acc) if x_mean is None else x_mean
        return mean_nc, norm.running_mean, norm.running_var, False
    if torch.compiler.is_compiling():  # one reduction, which Inductor fuses: mean and variance per (n, c)
        var_nc, mean_nc = torch.var_mean(x, dims, correction=0)
        mean = mean_nc.mean(0)
        var = (var_nc + (mean_nc - mean) ** 2).mean(0)  # mean variance within samples + variance of means
    else:
        mean_nc = x.mean(dims, dtype=acc)
        mean = mean_nc.mean(0)
        var = _batch_variance(x, mean)
    if update:
        count = x.numel() // x.shape[1]
        with torch.no_grad():
            norm.running_mean.mul_(1 - factor).add_(factor * mean)
            norm.running_var.mul_(1 - factor).add_(factor * count / (count - 1) * var)
    return mean_nc, mean, var, True


def _affine(norm: nn.Module, mean: Tensor, invstd: Tensor) -> tuple[Tensor, Tensor]:
    """(scale, shift) with norm's output = x * scale + shift, given the mean and 1/std it normalises with."""
    scale = invstd if norm.weight is None else invstd * norm.weight
    return scale, (-mean * scale if norm.bias is None else norm.bias - mean * scale)


def _affine_step(
    eca: ECA, norm: nn.Module, x: Tensor, identity: Tensor | None, relu: bool, x_mean: Tensor | None, inplace: bool
) -> Tensor:
    """The fused step as plain tensor operations: act(x * scale * s + shift * s + identity), with s the
    gate of the pooled descriptor mean_hw(norm(x)) = mean_hw(x) * scale + shift.

    Under torch.compile, Inductor turns the statistics into one reduction and the rest into one pointwise
    kernel, and derives the backward. In eager inference (``inplace``) the result is written into x itself:
    BatchNorm's own output would be a fresh full-size buffer, which on a CPU costs more than all the
    passes over it (the pages of a large new buffer are faulted in one by one).
    """
    mean_nc, mean, var, _ = _statistics(norm, x, x_mean)
    scale, shift = _affine(norm, mean, (var + norm.eps).rsqrt())
    s = eca.gate((mean_nc * scale + shift).to(x.dtype))
    # The coefficients as one stacked (2, N, C) tensor: Inductor computes a stack once, in the small kernel
    # of the gate, where it would inline two separate products into the full-size kernel and recompute
    # BatchNorm's per-channel rsqrt and the products for every element of x (which made that kernel
    # compute-bound on CPUs: benchmarks/compiled_block.py).
    a, b = torch.stack((scale * s, shift * s)).to(x.dtype)
    return _scale_add(x, a, b, identity, relu, x if inplace else None)


def _scale_add(x: Tensor, a: Tensor, b: Tensor, identity: Tensor | None, relu: bool, out: Tensor | None) -> Tensor:
    """``act(x * a + b + identity)`` with (N, C) coefficients a and b, into ``out`` (x itself for in place;
    None for a new tensor).

    The coefficients come before x in the argument lists on purpose: Inductor's post-grad locality pass
    (``reorder_for_locality``) moves each operation's producers right before it, one argument after the
    other, so the last argument's producer ends up nearest. With x last, the block's last convolution runs
    after the gate, and the pooled descriptor's reduction over that convolution's input is fused into the
    kernel that writes the input, while it is still in cache (with x first it ran after the convolution,
    reading the input back from memory).

    The fused training step writes the same into a fresh buffer in two passes instead (``_scale_shift``,
    ``_add_act``); for eager inference in place that form measured 0.987x and 0.989x ResNet-50 in two
    ``ecanet bench`` runs, against 0.994x with this one, so inference keeps this one.
    """
    a = broadcast_channels(a, x)
    y = torch.mul(a, x, out=out) if identity is None else torch.addcmul(identity, a, x, out=out)
    y = y.add_(broadcast_channels(b, x))
    return y.relu_() if relu else y


def _scale_shift(x: Tensor, a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    """``out = x * a + b`` with (N, C) coefficients a and b, in one pass.

    For contiguous NCHW tensors this is BatchNorm's inference kernel over an (1, N*C, HW) view, with a and b
    as its weight and bias and the identity as its statistics (mean 0, variance 1, eps 0): ``addcmul(b, x,
    a)`` would broadcast two operands, which its CPU loop does not vectorise (the backward's two passes at
    stage 1 of ResNet-50 took 7.3 ms with it, 5.4 ms this way). Other layouts take ``addcmul``.
    """
    n, c = x.shape[:2]
    if x.is_contiguous() and out.is_contiguous():
        view, a, b = (1, n * c, -1), a.reshape(-1), b.reshape(-1)
        stats = torch.zeros_like(a), torch.ones_like(a)
        empty = a.new_empty(0)
        torch.ops.aten.native_batch_norm.out(
            x.view(view), a, b, *stats, False, 0.0, 0.0, out=out.view(view), save_mean=empty, save_invstd=empty
        )
        return out
    return torch.addcmul(broadcast_channels(b, x), x, broadcast_channels(a, x), out=out)


def _add_act(y: Tensor, identity: Tensor | None, relu: bool) -> Tensor:
    """``act(y + identity)`` in place in y; on CPU, in fp32 and fp64, the addition and the ReLU in one pass
    (ATen's ``_add_relu_``, the kernel behind PyTorch's own add + ReLU fusion, which has no bf16 or fp16)."""
    if identity is not None and relu and y.device.type == "cpu" and y.dtype in (torch.float32, torch.float64):
        return torch.ops.aten._add_relu_(y, identity)
    y = y if identity is None else y.add_(identity)
    return y.relu_() if relu else y


def _channel_sums(g: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, scratch: Tensor) -> tuple[Tensor, Tensor]:
    """Per (sample, channel): sum_hw(g) and sum_hw(g * x_hat), x_hat = (x - mean) * invstd, in >= fp32.

    For contiguous NCHW tensors this is BatchNorm's own backward reduction over an (1, N*C, HW) view of the
    tensors: one pass over g and x that writes nothing full-size. Other layouts (channels_last) cannot be
    viewed so; they write g * (x - mean) into ``scratch``, a buffer of x's shape the caller overwrites later.
    """
    n, c = x.shape[:2]
    if x.is_contiguous() and g.is_contiguous():
        ones = torch.ones(n * c, dtype=mean.dtype, device=x.device)
        view = (1, n * c, -1)
        mean, invstd = mean.repeat(n), invstd.repeat(n)
        reduce_only = [False, True, True]
        _, g_xhat, g_sum = torch.ops.aten.native_batch_norm_backward(
            g.view(view), x.view(view), ones, None, None, mean, invstd, True, 0.0, reduce_only
        )
        return g_sum.view(n, c), g_xhat.view(n, c)
    dims = tuple(range(2, x.ndim))
    g_xc = torch.sub(x, _per_channel(mean, x), out=scratch).mul_(g).sum(dims, dtype=mean.dtype)
    return g.sum(dims, dtype=mean.dtype), g_xc * invstd


class _NormECAResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, identity: Tensor | None, relu: bool, norm: nn.Module, eca: ECA, *params: Tensor):
        acc = torch.promote_types(x.dtype, torch.float32)  # per-channel arithmetic in >= fp32
        mean_nc, mean, var, batch = _statistics(norm, x)
        mean, invstd = mean.to(acc), (var.to(acc) + norm.eps).rsqrt()
        scale, shift = (v.to(acc) for v in _affine(norm, mean, invstd))
        # the pooled descriptor mean_hw(norm(x)), from x's spatial means (BatchNorm is affine per channel)
        x_centred = mean_nc - mean
        pooled = scale * x_centred if norm.bias is None else torch.addcmul(norm.bias.to(acc), scale, x_centred)
        pooled, xhat_mean = pooled.to(x.dtype), x_centred * invstd
        # The gate's small graph is kept for backward (a few (N, C) tensors) rather than recomputed.
        with torch.enable_grad():
            pooled = pooled.requires_grad_()
            s = eca.gate(pooled)
        sd = s.detach().to(acc)
        y = _scale_shift(x, scale * sd, shift * sd, out=torch.empty_like(x))  # BatchNorm and gate, one pass
        y = _add_act(y, identity, relu)
        ctx.relu, ctx.batch, ctx.has_identity = relu, batch, identity is not None
        ctx.norm_params = any(True for _ in norm.parameters())  # an affine BatchNorm's weight and bias
        ctx.gate = (pooled, s, list(eca.parameters()))
        ctx.save_for_backward(x, y, mean, invstd, scale, xhat_mean, norm.weight, norm.bias)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        x, y, mean, invstd, scale, xhat_mean, weight, bias = ctx.saved_tensors
        if ctx.relu:
            g = torch.ops.aten.threshold_backward(g, y, 0)  # ReLU's own backward: g where y > 0, else 0
        acc, spatial = mean.dtype, x[0, 0].numel()
        dx = torch.empty_like(x)  # the one new full-size buffer (possibly scratch first)
        g_sum, g_xhat = _channel_sums(g, x, mean, invstd, dx)
        weight_ = 1 if weight is None else weight.to(acc)
        ds = weight_ * g_xhat + (0 if bias is None else bias.to(acc) * g_sum)  # sum_hw(G * out)
        pooled, s, eca_params = ctx.gate
        # retain_graph: backward may run more than once over a retained outer graph (e.g. gradcheck)
        d_pooled, *d_eca = torch.autograd.grad(s, [pooled, *eca_params], ds.to(s.dtype), retain_graph=True)
        d_pooled, s = d_pooled.to(acc), s.detach().to(acc)

        # dz = s * G + d_pooled / HW at the norm's output; its sums over samples and space:
        d_bias = (s * g_sum + d_pooled).sum(0)
        d_weight = (s * g_xhat + d_pooled * xhat_mean).sum(0)  # sum(dz * x_hat)
        alpha = scale * s
        delta = scale * d_pooled / spatial
        if ctx.batch:  # batch statistics: the mean and variance depend on x too
            count = x.numel() // x.shape[1]
            beta = -scale * invstd * d_weight / count
            delta = delta - scale * d_bias / count - beta * mean
        _scale_shift(g, alpha, delta, out=dx)
        if ctx.batch:
            dx.addcmul_(x, _per_channel(beta, x))
        d_norm = (d_weight.to(weight.dtype), d_bias.to(bias.dtype)) if ctx.norm_params else ()
        return (dx, g if ctx.has_identity else None, None, None, None, *d_norm, *d_eca)


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

    ``norm`` is the BatchNorm before the attention (``is_fusable_norm``). Equal in value and gradient to the
    plain formulation, with less memory traffic and no extra activation kept for backward. ``x_mean``, x's
    spatial mean if the caller has it more cheaply than by reading x, is used where ``norm`` runs on
    running statistics without autograd through this function (inference, torch.compile). ``inplace``
    lets the result overwrite x when no gradient is recorded (the blocks pass their convolution's output,
    which nothing else reads).
    """
    if not is_fusable_norm(norm):
        raise TypeError(f"eca_residual: cannot fuse {type(norm).__name__}; use the plain formulation")
    eca.check_input(x)
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        return _NormECAResidual.apply(x, identity, relu, norm, eca, *norm.parameters(), *eca.parameters())
    return _affine_step(eca, norm, x, identity, relu, x_mean, inplace and not torch.is_grad_enabled())
