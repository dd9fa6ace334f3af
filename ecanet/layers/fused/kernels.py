"""The low-level kernels of the fused step: every private PyTorch call of the project lives here, each
behind a named function with a one-line contract and beside its pure-PyTorch reference (``REFERENCES``).

Several reuse ATen operators written for another job (BatchNorm's own kernels run over an ``(1, N*C, HW)``
view, so that per-(sample, channel) work becomes BatchNorm's per-channel work). They are CPU kernels: a
tensor on any other device takes the reference (``cpu_kernel``), and at import each kernel is checked once
against its reference on a small input; should a PyTorch release change one (another signature, another
value), that kernel falls back to its reference for the whole process and a warning names it. Why each is
faster than its reference on a CPU is measured in docs/fast-path.md.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from torch import Tensor

from ..eca import broadcast_channels

log = logging.getLogger("ecanet")

REFERENCES: dict[Callable, Callable] = {}  # each kernel (as callers see it) -> its reference
BROKEN: set[str] = set()  # kernels that failed their import-time check on this PyTorch


def cpu_kernel(reference: Callable) -> Callable[[Callable], Callable]:
    """Run the decorated kernel on CPU tensors (its first argument's device) while it passes its self-check;
    ``reference`` otherwise. The kernel itself stays reachable as ``.kernel`` for the tests."""

    def wrap(kernel: Callable) -> Callable:
        @functools.wraps(kernel)
        def dispatch(x: Tensor, *args, **kwargs):
            if x.device.type == "cpu" and kernel.__name__ not in BROKEN:
                return kernel(x, *args, **kwargs)
            return reference(x, *args, **kwargs)

        dispatch.kernel = kernel
        REFERENCES[dispatch] = reference
        return dispatch

    return wrap


# Up to this many elements (2 MB in fp32, in cache) a product and an addition beat BatchNorm's kernel over
# the (1, N*C, S) view in ``scale_shift`` (measured: docs/fast-path.md).
SMALL_TENSOR = 2**19
# From this many positions per map the flat view's reduction beats ``mean`` of a bf16 map in fp32 (whose copy
# to fp32 grows with the map); below, its per-(sample, channel) set-up costs more (docs/fast-path.md).
WIDE_MAP = 512


def _global_average_pool_reference(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x.to(dtype).mean(tuple(range(2, x.ndim)))


def _moments_reference(x: Tensor, dtype: torch.dtype, square: bool = True) -> tuple[Tensor, Tensor | None]:
    x = x.to(dtype)
    return x.mean(tuple(range(2, x.ndim))), (x * x).mean(tuple(range(2, x.ndim))) if square else None


def _variance_about_reference(x: Tensor, mean: Tensor) -> Tensor:
    return (x * (x - broadcast_channels(mean, x))).mean((0, *range(2, x.ndim)))


def _scale_shift_reference(x: Tensor, a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    return out.copy_(x * broadcast_channels(a, x) + broadcast_channels(b, x))


def _normalize_reference(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, mean: Tensor, var: Tensor, eps: float, out: Tensor
) -> Tensor:
    y = (x - broadcast_channels(mean, x)) / broadcast_channels((var + eps).sqrt(), x)
    y = y if weight is None else y * broadcast_channels(weight, x)
    return out.copy_(y if bias is None else y + broadcast_channels(bias, x))


def _add_relu_reference(y: Tensor, other: Tensor) -> Tensor:
    return y.add_(other).relu_()


def _relu_backward_reference(g: Tensor, y: Tensor) -> Tensor:
    return torch.where(y > 0, g, torch.zeros_like(g))


def _channel_sums_reference(
    g: Tensor, x: Tensor, mean_nc: Tensor, x_centred: Tensor, scratch: Tensor
) -> tuple[Tensor, Tensor]:
    dims, dtype = tuple(range(2, x.ndim)), mean_nc.dtype
    centred = x.to(dtype) - broadcast_channels(mean_nc - x_centred, x)
    return g.to(dtype).sum(dims), (g.to(dtype) * centred).sum(dims)


def _batch_norm_backward_reference(
    dz: Tensor, x: Tensor, weight: Tensor | None, mean: Tensor, invstd: Tensor
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    dims = (0, *range(2, x.ndim))
    acc = mean.dtype
    x_hat = (x.to(acc) - broadcast_channels(mean, x)) * broadcast_channels(invstd, x)
    d_bias, d_weight = dz.to(acc).sum(dims), (dz.to(acc) * x_hat).sum(dims)
    count = x.numel() // x.shape[1]
    scale = invstd if weight is None else invstd * weight.to(acc)
    dx = (
        dz.to(acc) - broadcast_channels(d_bias / count, x) - x_hat * broadcast_channels(d_weight / count, x)
    ) * broadcast_channels(scale, x)
    affine = weight is not None
    return dx.to(dz.dtype), d_weight if affine else None, d_bias if affine else None


def _flat_view(x: Tensor) -> tuple[int, ...]:
    """The (1, N*C, S) view under which per-(sample, channel) work is BatchNorm's per-channel work."""
    return (1, x.shape[0] * x.shape[1], -1)


@cpu_kernel(_global_average_pool_reference)
def global_average_pool(x: Tensor, dtype: torch.dtype) -> Tensor:
    """x's mean over its positions per (sample, channel), (N, C), computed and returned in ``dtype``.

    bf16/fp16 maps of at least ``WIDE_MAP`` positions: ``moments``' reduction over the flat view, which
    reads the narrow type directly; ``mean`` with a wider dtype first copies x to it.
    """
    positions = x.numel() // max(x.shape[0] * x.shape[1], 1)
    narrow = x.dtype in (torch.bfloat16, torch.float16)
    if not narrow or positions < WIDE_MAP or not x.is_contiguous() or torch.compiler.is_compiling():
        return x.mean(tuple(range(2, x.ndim)), dtype=dtype)
    return moments(x, dtype, square=False)[0]


@cpu_kernel(_moments_reference)
def moments(x: Tensor, dtype: torch.dtype, square: bool = True) -> tuple[Tensor, Tensor | None]:
    """x's mean and mean square (None unless ``square``) over its positions per (sample, channel), (N, C)
    each in ``dtype``, in one read of a contiguous x.

    BatchNorm's backward reduction over the flat view with x as both the gradient and the input, about
    zero: its bias gradient is the sum, its weight gradient (the inverse-std argument 1 / positions scaling
    it in the same call) the mean square. A bf16/fp16 x is read directly, the sums taken in ``dtype``.
    """
    n, c = x.shape[:2]
    positions = x.numel() // max(n * c, 1)
    zeros, view = x.new_zeros(n * c, dtype=dtype), _flat_view(x)
    _, mean_square, total = torch.ops.aten.native_batch_norm_backward(
        x.view(view), x.view(view), None, None, None, zeros, torch.full_like(zeros, 1 / positions), True, 0.0,
        [False, square, True],
    )  # fmt: skip
    return total.view(n, c).mul_(1 / positions), mean_square.view(n, c) if square else None


@cpu_kernel(_variance_about_reference)
def variance_about(x: Tensor, mean: Tensor) -> Tensor:
    """The mean over (N, *S) of x * (x - mean), per channel: x's biased variance given its mean, in one read.

    BatchNorm's backward reduction with x as both the gradient and the input (it writes nothing full-size),
    its inverse-std argument 1 / count scaling the sum in the same call.
    """
    count = max(x.numel() // max(x.shape[1], 1), 1)
    _, var, _ = torch.ops.aten.native_batch_norm_backward(
        x, x, None, None, None, mean, torch.full_like(mean, 1 / count), True, 0.0, [False, True, False]
    )
    return var


@cpu_kernel(_scale_shift_reference)
def scale_shift(x: Tensor, a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    """out = x * a + b with (C,) or (N, C) coefficients a and b, in one pass.

    Larger contiguous tensors: BatchNorm's inference kernel over the flat view, with a and b as its weight
    and bias and identity statistics (``addcmul`` with two broadcast operands is not vectorised on CPU).
    Up to ``SMALL_TENSOR`` elements with coefficients in x's dtype: a product and an addition, two passes in
    cache. A bf16 x with fp32 coefficients always takes the kernel, which reads both types directly: the
    product would first copy x to fp32.
    """
    if x.numel() <= SMALL_TENSOR and a.dtype == x.dtype:
        return torch.mul(x, broadcast_channels(a, x), out=out).add_(broadcast_channels(b, x))
    if x.is_contiguous() and out.is_contiguous():
        n = x.shape[0]
        a, b = (_tiled(v, n) if v.ndim == 1 else v.reshape(-1) for v in (a, b))
        empty, view = a.new_empty(0), _flat_view(x)
        torch.ops.aten.native_batch_norm.out(
            x.view(view), a, b, torch.zeros_like(a), torch.ones_like(a), False, 0.0, 0.0,
            out=out.view(view), save_mean=empty, save_invstd=empty,
        )  # fmt: skip
        return out
    return torch.addcmul(broadcast_channels(b, x), x, broadcast_channels(a, x), out=out)


@cpu_kernel(_normalize_reference)
def normalize(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, mean: Tensor, var: Tensor, eps: float, out: Tensor
) -> Tensor:
    """out = (x - mean) / sqrt(var + eps) * weight + bias per channel: BatchNorm's inference kernel, one call
    from the norm's own parameters and statistics (no coefficients to compute first; ``out`` may be x)."""
    empty = mean.new_empty(0)
    torch.ops.aten.native_batch_norm.out(
        x, weight, bias, mean, var, False, 0.0, eps, out=out, save_mean=empty, save_invstd=empty
    )
    return out


@cpu_kernel(_add_relu_reference)
def add_relu_(y: Tensor, other: Tensor) -> Tensor:
    """y = relu(y + other), in place (``other`` broadcasts); in eager fp32/fp64 one pass (ATen's
    ``_add_relu_``, the kernel of PyTorch's own add + ReLU fusion, which has no bf16 or fp16; Inductor has no
    lowering for it and fuses the two operations itself)."""
    if y.dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling():
        return torch._add_relu_(y, other)
    return y.add_(other).relu_()


@cpu_kernel(_relu_backward_reference)
def relu_backward(g: Tensor, y: Tensor) -> Tensor:
    """g where y > 0, else 0: ReLU's gradient from its output (ATen's ``threshold_backward``)."""
    return torch.ops.aten.threshold_backward(g, y, 0)


@cpu_kernel(_batch_norm_backward_reference)
def batch_norm_backward(
    dz: Tensor, x: Tensor, weight: Tensor | None, mean: Tensor, invstd: Tensor
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """BatchNorm's backward with batch statistics: (dx, d_weight, d_bias) from dz = dL/d(norm(x)), given the
    batch's ``mean`` and ``invstd`` (>= fp32); dx in dz's dtype, the sums in fp32 and rounded once. The
    gradients of weight and bias are None without an affine weight. ATen's own backward kernel."""
    mask = [True, weight is not None, weight is not None]
    return torch.ops.aten.native_batch_norm_backward(dz, x, weight, None, None, mean, invstd, True, 0.0, mask)


def _tiled(v: Tensor, n: int) -> Tensor:
    """v (C,) repeated n times, (N*C,): ``v.repeat(n)``, which costs twice as much on small tensors."""
    return v.expand(n, v.shape[0]).reshape(-1)


@cpu_kernel(_channel_sums_reference)
def channel_sums(g: Tensor, x: Tensor, mean_nc: Tensor, x_centred: Tensor, scratch: Tensor) -> tuple[Tensor, Tensor]:
    """Per (sample, channel): sum_S(g) and sum_S(g * (x - mean)), in mean_nc's dtype, given x's spatial mean
    ``mean_nc`` and its offset from the channel mean ``x_centred = mean_nc - mean``, both (N, C).

    The second sum is taken about each sample's own mean, sum_S(g * (x - mean_nc)), and moved by
    x_centred * sum_S(g): per (sample, channel) coefficients that need no tiling of per-channel ones.
    Contiguous tensors: BatchNorm's backward reduction over the flat view, one pass over g and x that writes
    nothing full-size. Other layouts write g * (x - mean_nc) into ``scratch`` (x's shape; the caller's).
    """
    n, c = x.shape[:2]
    if x.is_contiguous() and g.is_contiguous():
        view, centre = _flat_view(x), mean_nc.reshape(-1)
        _, g_xc, g_sum = torch.ops.aten.native_batch_norm_backward(
            g.view(view), x.view(view), None, None, None, centre, torch.ones_like(centre), True, 0.0,
            [False, True, True],
        )  # fmt: skip
        g_sum, g_xc = g_sum.view(n, c), g_xc.view(n, c)
    else:
        dims = tuple(range(2, x.ndim))
        g_xc = torch.sub(x, broadcast_channels(mean_nc, x), out=scratch).mul_(g).sum(dims, dtype=mean_nc.dtype)
        g_sum = g.sum(dims, dtype=mean_nc.dtype)
    return g_sum, torch.addcmul(g_xc, x_centred, g_sum)


def is_fx_tracing() -> bool:
    """Whether torch.fx's symbolic tracer is running (a private helper of torch.fx; False on a PyTorch
    without it, where such a trace would fail on the fused step's data-dependent code and say so)."""
    symbolic_trace = getattr(torch.fx, "_symbolic_trace", None)
    check = getattr(symbolic_trace, "is_fx_symbolic_tracing", None)
    return bool(check and check())


def cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """t in ``dtype``, without an operator call where it already is (the step runs for every block)."""
    return t if t.dtype == dtype else t.to(dtype)


def _self_check() -> None:
    """Each kernel against its reference on one small fp64 CPU input; a kernel that raises or differs is
    marked broken (its reference runs instead) and named once in the log."""
    gen = torch.Generator().manual_seed(0)
    x, g, other = (torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=gen) for _ in range(3))
    mean, var = torch.randn(3, dtype=torch.float64, generator=gen), torch.rand(3, dtype=torch.float64, generator=gen)
    mean_nc, a, b = (torch.randn(2, 3, dtype=torch.float64, generator=gen) for _ in range(3))
    invstd = (var + 0.5).rsqrt()
    big = torch.randn(1, 2, 520, 520, dtype=torch.float64, generator=gen)
    cases = {
        global_average_pool: (x, torch.float64),
        moments: (x, torch.float64),
        variance_about: (x, mean),
        scale_shift: (big, a[:1, :2], b[:1, :2], torch.empty_like(big)),  # past SMALL_TENSOR: the kernel
        normalize: (x, a[0], b[0], mean, var + 0.5, 1e-5, torch.empty_like(x)),
        add_relu_: (x.clone(), other),
        relu_backward: (g, x),
        batch_norm_backward: (g, x, a[0], mean, invstd),
        channel_sums: (g, x, mean_nc, a, torch.empty_like(x)),
    }
    for dispatch, args in cases.items():
        try:
            got = dispatch.kernel(*[t.clone() if isinstance(t, Tensor) else t for t in args])
            want = REFERENCES[dispatch](*[t.clone() if isinstance(t, Tensor) else t for t in args])
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
        except Exception as e:  # a changed signature or value: any failure means the reference runs instead
            BROKEN.add(dispatch.__name__)
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.warning(
                "ecanet: fused kernel %s disagrees with its reference on torch %s (%s); using the reference",
                dispatch.__name__, torch.__version__, reason,
            )  # fmt: skip


_self_check()
