"""The shared training loop of every task (classification, detection): loaders, optimizer and schedule,
EMA, mixed precision, DDP, resume, and per epoch train, validate, record and checkpoint.

A task brings its model, training loader, step function and validation; the loop brings the rest.
Only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..errors import DataError, MissingExtraError, TrainingError, require
from ..weights import save_weights
from .checkpoint import resume_checkpoint, rng_state, save_training_checkpoint, set_rng_state
from .config import LoopConfig, save_config
from .distributed import Dist, all_gather_object, barrier
from .engine import Optimization, Precision, Resume, Step, precision_for, train_one_epoch
from .preemption import PausePoints, Preempted, StopSignals

log = logging.getLogger("ecanet")


@dataclass
class Task:
    """What a task brings to the loop.

    ``validate(model, precision)`` returns the validation fields of the epoch record and a score (higher is
    better) that picks the best weights; ``train_fields(totals)`` adds task fields (e.g. accuracy) from
    ``train_one_epoch``'s sums to the loop's own (train_loss, img_per_s, seconds); ``describe(record)`` is
    the epoch's log line; ``plot(records, path)`` draws the curves; ``progress(totals)`` adds fields to the
    progress bar; ``epoch_fields(model)`` adds fields read off the trained model to every epoch's record (e.g.
    CONet's layer ranks).
    """

    model: nn.Module
    train_loader: DataLoader
    step: Step
    validate: Callable[[nn.Module, Precision], tuple[dict, float]]
    describe: Callable[[dict], str]
    train_fields: Callable[[dict], dict] = lambda totals: {}
    plot: Callable[[list[dict], Path], object] | None = None
    progress: Callable[[dict], dict] | None = None
    epoch_fields: Callable[[nn.Module], dict] | None = None


def train_loader(dataset: Dataset, cfg: LoopConfig, proc: Dist, collate: Callable, where: str) -> DataLoader:
    """The training loader of every task: a distributed sampler (reshuffled every epoch, the same shards
    for the same seed), pinned memory on CUDA, persistent workers. A global batch larger than the
    dataset (``where``) is an error."""
    if cfg.batch_size * proc.world_size > len(dataset):
        raise DataError(
            f"--batch-size {cfg.batch_size} x {proc.world_size} process(es) is larger than the training set "
            f"({len(dataset)} images in {where})"
        )
    sampler = ResumableSampler(
        dataset, num_replicas=proc.world_size, rank=proc.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    return DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, **loader_options(cfg, proc, collate)
    )


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start one epoch part-way: after ``start`` of this process's samples
    (a mid-epoch resume); ``set_epoch`` starts the next from the beginning again."""

    start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        self.start = start

    def epoch_indices(self) -> list[int]:
        """This process's samples of the whole epoch, in order."""
        return list(super().__iter__())

    def __iter__(self):
        return iter(self.epoch_indices()[self.start :])

    def __len__(self) -> int:
        return super().__len__() - self.start


def eval_loader(dataset: Dataset, cfg: LoopConfig, proc: Dist, collate: Callable) -> DataLoader:
    """This process's evaluation shard, without padding (DistributedSampler would repeat samples to even
    out the shards, and they would count twice)."""
    shard = Subset(dataset, range(proc.rank, len(dataset), proc.world_size))
    return DataLoader(shard, batch_size=cfg.batch_size, shuffle=False, **loader_options(cfg, proc, collate))


def loader_options(cfg: LoopConfig, proc: Dist, collate: Callable) -> dict:
    """DataLoader settings shared by training and evaluation loaders: pinned memory on CUDA, persistent
    workers, ``--prefetch-factor`` where there are workers."""
    options = dict(
        num_workers=cfg.workers,
        pin_memory=proc.device.type == "cuda",
        persistent_workers=cfg.workers > 0,
        collate_fn=collate,
    )
    if cfg.prefetch_factor is not None and cfg.workers > 0:
        options["prefetch_factor"] = cfg.prefetch_factor
    return options


def check_loop_config(cfg: LoopConfig) -> None:
    """One line for a loop setting out of range, before anything is read or written."""
    if cfg.accumulate_steps < 1:
        raise ValueError(f"--accumulate-steps: expected an integer >= 1, got {cfg.accumulate_steps}")
    if cfg.clip_grad is not None and not cfg.clip_grad > 0:
        raise ValueError(f"--clip-grad: expected a norm > 0, got {cfg.clip_grad}")
    if cfg.prefetch_factor is not None and cfg.prefetch_factor < 1:
        raise ValueError(f"--prefetch-factor: expected an integer >= 1, got {cfg.prefetch_factor}")
    for flag, value in (("--checkpoint-every", cfg.checkpoint_every), ("--checkpoint-minutes", cfg.checkpoint_minutes)):
        if value is not None and not value > 0:
            raise ValueError(f"{flag}: expected a number > 0, got {value}")
    if cfg.skip_nonfinite < 0:
        raise ValueError(f"--skip-nonfinite: expected an integer >= 0, got {cfg.skip_nonfinite}")
    if cfg.workers < 0:
        raise ValueError(f"--workers: expected an integer >= 0, got {cfg.workers}")


def configure_cuda(cfg: LoopConfig, device: torch.device) -> None:
    """cuDNN's autotuner (``--cudnn-benchmark``: worth it when input sizes are fixed) and TF32 for float32
    matrix products and convolutions (``--tf32``: precision "high"); nothing on other devices."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark  # CUDA only
    torch.backends.cudnn.allow_tf32 = cfg.tf32  # CUDA only
    torch.set_float32_matmul_precision("high" if cfg.tf32 else "highest")  # CUDA only


def wrap_ddp(model: nn.Module, proc: Dist) -> nn.Module:
    """DistributedDataParallel on this process's device (``device_ids`` on CUDA), gradients written
    straight into the communication buckets (``gradient_as_bucket_view``: one copy fewer)."""
    device_ids = [proc.device.index] if proc.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)


def scaled_lr(cfg: LoopConfig, world_size: int) -> float:
    """--lr if given, else the linear scaling rule: base_lr x global batch / base_batch."""
    return cfg.lr or cfg.base_lr * cfg.batch_size * world_size / cfg.base_batch


def lr_lambda(cfg: LoopConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base lr at iteration i: linear warmup, then the schedule by (fractional) epoch."""
    if cfg.schedule not in ("step", "multistep", "exponential", "cosine", "poly", "constant"):
        raise ValueError(f"--schedule: unknown schedule {cfg.schedule!r}")

    def factor(i: int) -> float:
        epoch = i / steps_per_epoch
        if epoch < cfg.warmup_epochs:
            return (i + 1) / (cfg.warmup_epochs * steps_per_epoch)
        if cfg.schedule == "step":
            return cfg.gamma ** int(epoch // cfg.step_size)
        if cfg.schedule == "multistep":
            return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
        if cfg.schedule == "exponential":
            return cfg.gamma ** int(epoch)
        if cfg.schedule == "cosine":
            span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
            return 0.5 * (1 + math.cos(math.pi * min((epoch - cfg.warmup_epochs) / span, 1.0)))
        if cfg.schedule == "poly":  # the segmentation reference's decay, (1 - progress) ** 0.9
            span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
            return (1 - min((epoch - cfg.warmup_epochs) / span, 1.0)) ** 0.9
        return 1.0

    return factor


def build_optimizer(cfg: LoopConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"--optimizer: unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")


def fit(task: Task, cfg: LoopConfig, proc: Dist) -> dict:
    """Run the epochs of ``cfg`` on ``task``; returns best_score, records, train_time_s and eval_model."""
    check_loop_config(cfg)
    configure_cuda(cfg, proc.device)
    out = Path(cfg.output)
    model = task.model
    optimizer = build_optimizer(cfg, model)
    steps_per_epoch = math.ceil(len(task.train_loader) / cfg.accumulate_steps)  # optimizer steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))
    optimization = Optimization(cfg.accumulate_steps, cfg.clip_grad, skip_nonfinite=cfg.skip_nonfinite)
    ema = None
    if cfg.ema_decay:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    precision = precision_for(proc.device, cfg.amp, cfg.amp_dtype)

    start_epoch, best, records, resume = 0, -math.inf, [], None
    ckpt = None if cfg.resume is None else resume_checkpoint(cfg.resume, out, model.config)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if precision.scaler is not None and ckpt.get("scaler"):  # CUDA only
            precision.scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        best = ckpt["best_score"]
        if cfg.budget_minutes:  # the epochs the budget gave the interrupted run
            cfg = replace(cfg, epochs=ckpt["config"]["epochs"])
            scheduler.lr_lambdas[0] = lr_lambda(cfg, steps_per_epoch)
        rng = ckpt["rng"][proc.rank] if proc.rank < len(ckpt["rng"]) else ckpt["rng"][0]
        if ckpt.get("step") is None:  # an epoch's end
            start_epoch = ckpt["epoch"] + 1
            set_rng_state(rng)
        else:  # the middle of an epoch: its RNGs are restored once that epoch's loader has started
            start_epoch, state = ckpt["epoch"], ckpt["epoch_state"]
            totals = {k: v.to(proc.device) if torch.is_tensor(v) else v for k, v in state["totals"][proc.rank].items()}
            resume = (Resume(ckpt["step"], totals, rng), state["lr"])
        records = _read_records(out / "metrics.jsonl", start_epoch)
    elif cfg.resume == "auto" and proc.is_main:  # a first start, or one that died before its first checkpoint
        _read_records(out / "metrics.jsonl", 0)

    if proc.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.json")
    writer = _tensorboard(out) if proc.is_main else None
    runner = wrap_ddp(model, proc) if proc.enabled else model
    runner = torch.compile(runner) if cfg.compile else runner
    eval_model = ema.module if ema is not None else model

    def write_checkpoint(epoch: int, step: int | None, epoch_state: dict | None) -> None:
        """Every process's RNG states (all processes call this together); the main process writes."""
        rng = all_gather_object(rng_state(), proc)
        if proc.is_main:
            save_training_checkpoint(
                out / "checkpoint.pt",
                model=model.state_dict(),
                meta=dict(model.config),
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                scaler=precision.scaler.state_dict() if precision.scaler else None,
                ema=ema.state_dict() if ema is not None else None,
                epoch=epoch,
                step=step,
                epoch_state=epoch_state,
                best_score=best,
                rng=rng,
                config=asdict(cfg),
            )

    started = time.perf_counter()
    epoch = start_epoch
    with StopSignals(cfg.stop_signals) as signals:
        pause = PausePoints(signals, proc, cfg.checkpoint_every, cfg.checkpoint_minutes)
        while epoch < cfg.epochs:
            resumed, lr = resume if resume is not None else (None, optimizer.param_groups[0]["lr"])
            task.train_loader.sampler.set_epoch(epoch, resumed.step * cfg.batch_size if resumed else 0)
            resume = None

            def checkpoint(step: int, totals: dict, stop: bool, epoch: int = epoch, lr: float = lr) -> None:
                portable = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in totals.items()}
                write_checkpoint(epoch, step, {"lr": lr, "totals": all_gather_object(portable, proc)})
                if stop:
                    raise Preempted(
                        f"stopped by {signals.received or 'a stop signal'} at epoch {epoch}, step {step}: "
                        f"checkpoint in {out / 'checkpoint.pt'}; continue with --resume"
                    )

            totals = train_one_epoch(
                runner, task.train_loader, task.step, optimizer, scheduler, precision, proc, epoch, ema,
                task.progress, optimization, resumed, pause, checkpoint,
            )  # fmt: skip
            val, score = task.validate(eval_model, precision)
            if cfg.budget_minutes and epoch == 0:
                cfg = replace(cfg, epochs=planned_epochs(cfg.budget_minutes, time.perf_counter() - started, proc))
                scheduler.lr_lambdas[0] = lr_lambda(cfg, steps_per_epoch)
                if proc.is_main:
                    save_config(cfg, out / "config.json")
                    log.info("--budget-minutes %g: %d epochs fit", cfg.budget_minutes, cfg.epochs)
            train = {
                "train_loss": totals["loss_sum"] / max(totals["n"], 1),
                "img_per_s": totals["n"] / max(totals["seconds"], 1e-9),
                "seconds": totals["seconds"],
            }
            record = {"epoch": epoch, "lr": lr, **train, **task.train_fields(totals), **val}
            if task.epoch_fields is not None:
                record |= task.epoch_fields(task.model)
            if totals.get("nonfinite_skipped"):
                record["nonfinite_skipped"] = int(totals["nonfinite_skipped"])
            if not all(math.isfinite(record[k]) for k in ("train_loss", "val_loss") if k in record):
                raise TrainingError(f"non-finite loss in epoch {epoch}; last good checkpoint kept in {out}")
            records.append(record)
            skipped = getattr(task.step, "skipped", None)
            if record.get("skipped_images") and skipped and proc.is_main:
                log.warning(
                    "epoch %d: skipped %d unreadable images, e.g. %s", epoch, record["skipped_images"], skipped[0]
                )
            is_best = score >= best
            best = max(best, score)
            if proc.is_main:
                _write_epoch(out, record, writer)
            write_checkpoint(epoch, None, None)
            if proc.is_main:
                if is_best:
                    save_weights(eval_model, out / "best.safetensors")
                if task.plot is not None:
                    task.plot(records, out / "curves.png")
                log.info("epoch %d: %s", epoch, task.describe(record))
            epoch += 1
    barrier(proc)
    if proc.is_main:
        save_weights(eval_model, out / "final.safetensors")
        if writer is not None:
            writer.close()
    return {
        "best_score": best,
        "epochs": cfg.epochs,
        "records": records,
        "train_time_s": time.perf_counter() - started,
        "eval_model": eval_model,
    }


def write_summary(cfg: LoopConfig, proc: Dist, result: dict, model: nn.Module, **fields) -> dict:
    """A run's summary: model, the task's ``fields``, epochs, params, training time, processes; written to
    OUT/summary.json by rank 0."""
    summary = {
        "model": cfg.model,
        **fields,
        "epochs": result["epochs"],
        "params": sum(p.numel() for p in model.parameters()),
        "train_time_s": result["train_time_s"],
        "world_size": proc.world_size,
    }
    if proc.is_main:
        (Path(cfg.output) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def planned_epochs(minutes: float, first_epoch_seconds: float, proc: Dist) -> int:
    """The epochs that fit a wall-time budget, from the first epoch's time (training and validation); rank
    0's estimate in every process, so that all stop together."""
    seconds = all_gather_object(first_epoch_seconds, proc)[0]
    return max(1, int(minutes * 60 // max(seconds, 1e-9)))


def _read_records(path: Path, upto: int) -> list[dict]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in records if r["epoch"] < upto]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))  # epochs after the checkpoint are redone
    return kept


def _write_epoch(out: Path, record: dict, writer) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, value in record.items():
            if key != "epoch" and isinstance(value, int | float):
                writer.add_scalar(key, value, record["epoch"])


def _tensorboard(out: Path):
    """A TensorBoard writer, or None (logged, and training goes on) without the "tensorboard" extra."""
    try:
        require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter
    except MissingExtraError as e:
        log.info("TensorBoard logging off: %s", e)
        return None
    return SummaryWriter(str(out / "tensorboard"))
