"""The training engine: one epoch of training, evaluation, mixed precision, checkpoints that survive a
crash, and the per-epoch record. Task-agnostic: a task supplies ``step(model, batch) -> (loss, counts)``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .distributed import Dist, all_reduce_sum, all_reduce_tensor
from .errors import TrainingError


@dataclass
class Precision:
    """Mixed precision: autocast dtype (None: fp32) and, for fp16 on CUDA, a gradient scaler."""

    device_type: str
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        use_scaler = self.dtype == torch.float16 and self.device_type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype else nullcontext()


def precision_for(device: torch.device, amp: bool, amp_dtype: str | None) -> Precision:
    if not amp:
        return Precision(device.type)
    dtype = getattr(torch, amp_dtype) if amp_dtype else (torch.float16 if device.type == "cuda" else torch.bfloat16)
    return Precision(device.type, dtype)


Step = Callable[[nn.Module, object], tuple[Tensor, dict[str, float]]]


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
) -> dict[str, float]:
    """One pass over ``loader``; the scheduler steps per iteration. Returns sums of ``counts`` over all
    processes, plus ``loss_sum``, ``n`` and ``seconds``. The progress bar (rank 0, terminals only) shows
    loss, img/s, lr, the ETA and what ``progress(totals)`` adds."""
    model.train()
    totals: dict[str, float] = {}
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"train {epoch}", disable=None if proc.is_main else True, leave=False, dynamic_ncols=True)
    for i, batch in enumerate(bar):
        with precision.autocast():
            loss, counts = step(model, batch)
        if counts.get("n", 1) == 0:
            _accumulate(totals, counts)
            continue
        optimizer.zero_grad(set_to_none=True)
        if precision.scaler is not None:  # CUDA only (fp16 gradient scaling)
            precision.scaler.scale(loss).backward()
            precision.scaler.step(optimizer)
            precision.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        loss_value = loss.detach()
        _accumulate(totals, counts, loss_sum=loss_value * counts.get("n", 1))
        if not math.isfinite(float(loss_value)):  # one sync per step: the price of stopping on the first NaN
            raise TrainingError(f"non-finite loss ({float(loss_value)}) at epoch {epoch}, step {i}")
        if proc.is_main and i % 10 == 0:
            elapsed = time.perf_counter() - start
            shown = {"loss": f"{float(totals['loss_sum']) / max(totals['n'], 1):.4f}"}
            shown |= progress(totals) if progress is not None else {}
            shown["img_s"] = f"{totals['n'] * proc.world_size / max(elapsed, 1e-9):.1f}"
            shown["lr"] = f"{optimizer.param_groups[0]['lr']:.4g}"
            bar.set_postfix(shown)
    return _reduce(totals, proc, time.perf_counter() - start)


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
