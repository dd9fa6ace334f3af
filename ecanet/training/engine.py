"""The training engine: one epoch of training, evaluation, mixed precision, checkpoints that survive a
crash, and the per-epoch record. Task-agnostic: a task supplies ``step(model, batch) -> (loss, counts)``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..errors import TrainingError
from .checkpoint import set_rng_state
from .distributed import Dist, all_reduce_sum, all_reduce_tensor

log = logging.getLogger("ecanet")


@dataclass
class Precision:
    """Mixed precision: autocast dtype (None: fp32) and, for fp16, a gradient scaler (made here on CUDA;
    elsewhere only when one is passed in)."""

    device_type: str
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    def __post_init__(self) -> None:
        if self.scaler is None and self.dtype == torch.float16 and self.device_type == "cuda":
            self.scaler = torch.amp.GradScaler("cuda")

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype else nullcontext()


def amp_dtype(device_type: str, requested: str | None, bf16_supported: bool) -> torch.dtype:
    """The autocast dtype: ``requested`` (bfloat16 | float16), else bf16 where the device has it (CPUs, and
    GPUs from Ampere on), else fp16 (with gradient scaling on CUDA). bf16 asked of a GPU without it is an
    error."""
    if requested not in (None, "bfloat16", "float16"):
        raise ValueError(f"--amp-dtype: expected bfloat16 or float16, got {requested!r}")
    if requested == "bfloat16" and not bf16_supported:
        raise ValueError(f"--amp-dtype bfloat16: this {device_type} device has no bfloat16; use float16")
    if requested is not None:
        return getattr(torch, requested)
    return torch.bfloat16 if bf16_supported else torch.float16


def precision_for(device: torch.device, amp: bool, requested: str | None) -> Precision:
    if not amp:
        return Precision(device.type)
    bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else device.type == "cpu"  # CUDA only
    return Precision(device.type, amp_dtype(device.type, requested, bf16))


Step = Callable[[nn.Module, object], tuple[Tensor, dict[str, float]]]


@dataclass(frozen=True)
class Resume:
    """Where a resumed epoch continues: after ``step`` micro-batches, with this process's sums so far and its
    RNG states at that point."""

    step: int
    totals: dict
    rng: dict


@dataclass(frozen=True)
class Optimization:
    """How gradients become an update: ``accumulate`` micro-batches per optimizer step, the gradients'
    global norm clipped to ``clip_grad`` (None: not clipped), a progress read (and the non-finite loss
    check) every ``log_every`` steps, and how many non-finite losses may be skipped (each skips its
    optimizer step, with a warning) before the run stops."""

    accumulate: int = 1
    clip_grad: float | None = None
    log_every: int = 10
    skip_nonfinite: int = 0  # steps with a non-finite loss this epoch may skip (``--skip-nonfinite``)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    step: Step,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    precision: Precision,
    proc: Dist,
    epoch: int,
    ema: nn.Module | None = None,
    progress: Callable[[dict], dict] | None = None,
    optimization: Optimization = Optimization(),
    resume: Resume | None = None,
    pause: Callable[[int], tuple[bool, bool]] | None = None,
    checkpoint: Callable[[int, dict, bool], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; the scheduler steps per optimizer step (not on one that the gradient scaler
    skipped). Returns sums of ``counts`` over all processes, plus ``loss_sum``, ``n`` and ``seconds``.

    The loss stays on the device: whether it is finite is recorded there and read with the progress every
    ``log_every`` steps and at the end, so no step waits for the device; the run stops at the first
    non-finite loss read, naming its step. The progress bar (rank 0, terminals only) shows loss, img/s, lr,
    the ETA and what ``progress(totals)`` adds.

    ``resume`` continues an epoch part-way (the loader's sampler already starts there). After each optimizer
    step ``pause(steps done)`` says whether to checkpoint and whether to stop; ``checkpoint(steps done,
    totals so far, stop)`` then writes one (and, to stop, raises).
    """
    model.train()
    start_step = resume.step if resume is not None else 0
    totals: dict = dict(resume.totals) if resume is not None else {}
    start = time.perf_counter()
    accumulate = optimization.accumulate
    size = start_step + len(loader) if hasattr(loader, "__len__") else None
    iterator = iter(loader)  # a loader's iterator draws its base seed here
    if resume is not None:  # the RNGs as they were after step ``start_step - 1``, before the next batch
        set_rng_state(resume.rng)
    first_bad = None  # on the device: the first step whose loss was not finite, or -1
    skipped: list[int] = []  # steps skipped for a non-finite loss (--skip-nonfinite)
    stepping = skipping = False  # this group has gradients / has a non-finite loss
    bar = tqdm(
        iterator, desc=f"train {epoch}", total=size, initial=start_step, disable=None if proc.is_main else True,
        leave=False, dynamic_ncols=True,
    )  # fmt: skip
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(bar, start=start_step):
        group_start = i - i % accumulate
        group = accumulate if size is None else min(accumulate, size - group_start)
        last = i == group_start + group - 1
        # DDP reduces gradients in backward: only on the group's last micro-batch (CUDA and gloo alike)
        sync = nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with precision.autocast():
                loss, counts = step(model, batch)
            empty = counts.get("n", 1) == 0
            bad = not empty and optimization.skip_nonfinite > 0 and _nonfinite_anywhere(loss, proc)
            if not (empty or bad):
                scaled = loss / group if group > 1 else loss
                (precision.scaler.scale(scaled) if precision.scaler is not None else scaled).backward()
                stepping = True
        if bad:
            skipped.append(i)
            where = f"non-finite loss at epoch {epoch}, step {i}{_samples(loader, i)}"
            if len(skipped) > optimization.skip_nonfinite:
                raise TrainingError(f"{where}: more than --skip-nonfinite {optimization.skip_nonfinite} this epoch")
            log.warning("%s: skipped (%d of %d allowed)", where, len(skipped), optimization.skip_nonfinite)
            skipping = True
        if last:
            if stepping and not skipping:
                _optimizer_step(model, optimizer, scheduler, precision, optimization.clip_grad)
                if ema is not None:
                    ema.update_parameters(model)
            else:
                optimizer.zero_grad(set_to_none=True)
            stepping = skipping = False
        if empty or bad:
            _accumulate(totals, counts)
        else:
            loss_value = loss.detach()
            _accumulate(totals, counts, loss_sum=loss_value * counts.get("n", 1))
            bad_step = torch.where(torch.isfinite(loss_value), -1, i)
            first_bad = bad_step if first_bad is None else torch.where(first_bad < 0, bad_step, first_bad)
        if last and pause is not None:
            save, stop = pause(i + 1)
            if save:
                _check_finite(first_bad, epoch, loader)  # a checkpoint holds no weights a NaN step made
                checkpoint(i + 1, totals, stop)
        if empty or bad:
            continue
        if i % optimization.log_every == 0 or (size is not None and i == size - 1):
            _check_finite(first_bad, epoch, loader)
            if proc.is_main:
                elapsed = time.perf_counter() - start
                shown = {"loss": f"{float(totals['loss_sum']) / max(totals['n'], 1):.4f}"}
                shown |= progress(totals) if progress is not None else {}
                shown["img_s"] = f"{totals['n'] * proc.world_size / max(elapsed, 1e-9):.1f}"
                shown["lr"] = f"{optimizer.param_groups[0]['lr']:.4g}"
                bar.set_postfix(shown)
    _check_finite(first_bad, epoch, loader)
    totals["nonfinite_skipped"] = len(skipped)
    return _reduce(totals, proc, time.perf_counter() - start)


def _nonfinite_anywhere(loss: Tensor, proc: Dist) -> bool:
    """Whether any process's loss is NaN or infinite (one read, and one all-reduce under DDP, per step: all
    processes skip together)."""
    return all_reduce_sum([float(not torch.isfinite(loss.detach()).all())], proc)[0] > 0


def _samples(loader: Iterable, step: int, shown: int = 8) -> str:
    """Which samples step ``step`` drew, as ``"; samples 12, 40 (path), ..."`` where the loader says (its
    sampler's indices; the file of the first where the dataset lists files), else ""."""
    sampler, size = getattr(loader, "sampler", None), getattr(loader, "batch_size", None)
    if sampler is None or not size:
        return ""
    epoch_indices = getattr(sampler, "epoch_indices", None)  # the whole epoch's, where it starts part-way
    indices = (epoch_indices() if epoch_indices else list(sampler))[step * size : (step + 1) * size]
    if not indices:
        return ""
    files = getattr(getattr(loader, "dataset", None), "samples", None)
    first = f" ({files[indices[0]][0]})" if isinstance(files, list) and indices[0] < len(files) else ""
    more = ", ..." if len(indices) > shown else ""
    return f"; samples {indices[0]}{first}, " + ", ".join(map(str, indices[1:shown])) + more


def _optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    precision: Precision,
    clip_grad: float | None,
) -> None:
    """Clip (the true gradients: unscaled first), step, advance the schedule, clear the gradients. A step
    the gradient scaler skips (inf/NaN gradients) does not advance the schedule."""
    scaler = precision.scaler
    if clip_grad is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    stepped = True
    if scaler is not None:
        scale = scaler.get_scale()  # GradScaler.step reads its inf check back to the host anyway
        scaler.step(optimizer)
        scaler.update()
        stepped = scaler.get_scale() >= scale  # the scale backs off exactly when the step was skipped
    else:
        optimizer.step()
    if scheduler is not None and stepped:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _check_finite(first_bad: Tensor | None, epoch: int, loader: Iterable) -> None:
    """Raise, naming the step and its samples, if a loss recorded so far was not finite (one read from the
    device)."""
    if first_bad is not None and (step := int(first_bad)) >= 0:
        raise TrainingError(f"non-finite loss at epoch {epoch}, step {step}{_samples(loader, step)}")


@torch.no_grad()
def evaluate_loop(model: nn.Module, loader: Iterable, step: Step, precision: Precision, proc: Dist) -> dict[str, float]:
    """Sums of the step's counts over the whole (sharded) loader, over all processes."""
    model.eval()
    totals: dict[str, float] = {}
    start = time.perf_counter()
    for batch in tqdm(loader, desc="eval", disable=None if proc.is_main else True, leave=False, dynamic_ncols=True):
        with precision.autocast():
            loss, counts = step(model, batch)
        _accumulate(totals, counts, loss_sum=loss.detach() * counts.get("n", 1))
    return _reduce(totals, proc, time.perf_counter() - start)


def _accumulate(totals: dict, counts: dict, **extra) -> None:
    for key, value in {**counts, **extra}.items():
        totals[key] = totals.get(key, 0) + value


def _reduce(totals: dict, proc: Dist, seconds: float) -> dict:
    """Sums over all processes: scalars as floats, counts that are arrays (a confusion matrix) as tensors."""
    arrays = {k for k, v in totals.items() if isinstance(v, Tensor) and v.ndim > 0}
    keys = sorted(set(totals) - arrays)
    values = all_reduce_sum([float(totals[k]) for k in keys], proc)
    out: dict = dict(zip(keys, values)) | {k: all_reduce_tensor(totals[k], proc) for k in sorted(arrays)}
    out.setdefault("n", 0.0)
    out.setdefault("loss_sum", 0.0)
    out["seconds"] = seconds
    return out
