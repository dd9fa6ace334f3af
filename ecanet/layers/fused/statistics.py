"""BatchNorm inside the fused step: which norms it takes, the statistics they normalise with, and the
running-statistics update, done as ``torch.nn.BatchNorm*`` does it (torch/nn/modules/batchnorm.py)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .kernels import WIDE_MAP, global_average_pool, moments, variance_about

# The norms the step takes, with the input rank each accepts (as their own _check_input_dim does).
FUSED_NORMS: dict[type, int] = {nn.BatchNorm1d: 3, nn.BatchNorm2d: 4, nn.BatchNorm3d: 5, FrozenBatchNorm2d: 4}


def is_fusable_norm(norm: nn.Module) -> bool:
    """Whether the fused step can run ``norm`` (BatchNorm and frozen BatchNorm; SyncBatchNorm and other
    norms take the plain formulation)."""
    return type(norm) in FUSED_NORMS


def norm_parameters(norm: nn.Module) -> tuple[Tensor, ...]:
    """The norm's learnable weight and bias (none without affine; frozen BatchNorm keeps them as buffers),
    read directly: ``parameters()`` walks the module tree on every call of every block."""
    return () if isinstance(norm, FrozenBatchNorm2d) or norm.weight is None else (norm.weight, norm.bias)


def uses_running_stats(norm: nn.Module) -> bool:
    """Whether ``norm`` normalises with fixed running statistics (eval mode, or frozen): an affine map per
    channel."""
    return isinstance(norm, FrozenBatchNorm2d) or not (norm.training or norm.running_mean is None)


class Statistics(NamedTuple):
    """What one forward of the norm needs: x's spatial mean per (sample, channel) (None where not asked
    for), the per-channel mean and variance the norm normalises with (>= fp32), and whether those are the
    batch's."""

    mean_nc: Tensor | None
    mean: Tensor
    var: Tensor
    batch: bool


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of per-channel arithmetic: fp32, or fp64 for fp64 inputs (a Python choice: this runs for
    every block, and ``torch.promote_types`` is an operator call)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _momentum(norm: nn.Module) -> float:
    """BatchNorm's step: count the batch and return the running statistics' update factor."""
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:  # cumulative moving average
            return 1.0 / float(norm.num_batches_tracked)
    return 0.0 if norm.momentum is None else norm.momentum


# Beyond this many standard deviations from zero a channel's one-read variance has lost too many digits (its
# relative error grows as eps * (mean / std)^2: in fp32 1e-4 at 20 std, where BatchNorm's two passes keep
# 5e-8), and it is taken in two passes instead.
FAR_FROM_ZERO = 20


def batch_moments(x: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """x's spatial mean per (sample, channel), and its batch mean and biased variance per channel, in
    ``dtype``.

    A contiguous x is read once (``kernels.moments``: the variance as mean(x^2) - mean^2), except bf16/fp16
    maps of fewer than ``WIDE_MAP`` positions, where the flat view's set-up per map costs more than a second
    read; others are read twice (the mean, then ``variance_about``). Either way the variance loses digits as
    mean / std grows: where a channel's mean exceeds ``FAR_FROM_ZERO`` std the two-pass variance is taken
    instead (the check reads one value back: on a GPU, where the fused step runs only as an experiment
    (``switch``), it waits for the device).
    """
    narrow = x.dtype in (torch.bfloat16, torch.float16)
    if x.is_contiguous() and not (narrow and x.numel() // max(x.shape[0] * x.shape[1], 1) < WIDE_MAP):
        mean_nc, square = moments(x, dtype)
    else:
        mean_nc, square = global_average_pool(x, dtype), None
    mean = mean_nc.mean(0)
    var = variance_about(x, mean) if square is None else torch.addcmul(square.mean(0), mean, mean, value=-1)
    # var * FAR_FROM_ZERO^2 < mean^2 for some channel, in few operator calls
    if float(torch.addcmul(var, mean, mean, value=-1 / FAR_FROM_ZERO**2).amin()) < 0:
        var = torch.var(x.to(dtype), dim=(0, *range(2, x.ndim)), correction=0)
    return mean_nc, mean, var


def statistics(norm: nn.Module, x: Tensor, per_sample: bool = True) -> Statistics:
    """The statistics ``norm`` normalises x with; with batch statistics the running ones are updated as
    BatchNorm does. ``per_sample=False`` skips x's spatial mean with running statistics, where the norm does
    not need it (no gate to feed)."""
    expected = FUSED_NORMS[type(norm)]
    if x.ndim != expected:
        raise ValueError(f"{type(norm).__name__}: expected a {expected}-D input, got shape {tuple(x.shape)}")
    dims, acc = tuple(range(2, x.ndim)), accumulation_dtype(x.dtype)
    factor = 0.0 if isinstance(norm, FrozenBatchNorm2d) else _momentum(norm)
    if uses_running_stats(norm):
        mean_nc = global_average_pool(x, acc) if per_sample else None
        return Statistics(mean_nc, norm.running_mean, norm.running_var, False)
    if torch.compiler.is_compiling():  # one reduction, which Inductor fuses: mean and variance per (n, c)
        var_nc, mean_nc = torch.var_mean(x, dims, correction=0)
        mean = mean_nc.mean(0)
        var = (var_nc + (mean_nc - mean) ** 2).mean(0)  # mean variance within samples + variance of means
    else:
        mean_nc, mean, var = batch_moments(x, acc)
    if norm.training and norm.track_running_stats and norm.running_mean is not None:
        count = x.numel() // x.shape[1]
        # The buffers take no part in autograd (a detach where a graph is recorded: torch.compile's).
        new_mean, new_var = (mean.detach(), var.detach()) if mean.requires_grad else (mean, var)
        norm.running_mean.mul_(1 - factor).add_(new_mean, alpha=factor)
        norm.running_var.mul_(1 - factor).add_(new_var, alpha=factor * count / (count - 1))  # unbiased, as BatchNorm
    return Statistics(mean_nc, mean, var, True)


def affine(norm: nn.Module, mean: Tensor, invstd: Tensor) -> tuple[Tensor, Tensor]:
    """(scale, shift) with norm(x) = x * scale + shift per channel, given the mean and 1/std it uses."""
    scale = invstd if norm.weight is None else invstd * norm.weight
    return scale, (-mean * scale if norm.bias is None else torch.addcmul(norm.bias, mean, scale, value=-1))
