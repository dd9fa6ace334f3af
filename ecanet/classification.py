"""Classification training and evaluation: ``ecanet.train(config)`` and ``ecanet.evaluate(...)``.

A plain loop a reader can follow: build data and model, then per epoch ``train_one_epoch``, ``evaluate_loop``,
record, checkpoint. Runs alone or under torchrun (DDP); only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .complexity import complexity
from .config import TrainConfig, save_config
from .data import DataError, Digits, ImageFolder, check_batch_size, collate_skipping, eval_transform, image_folders
from .distributed import Dist, barrier, cleanup, init_distributed
from .engine import (
    Precision,
    TrainingError,
    evaluate_loop,
    load_training_checkpoint,
    precision_for,
    rng_state,
    save_atomic,
    set_rng_state,
    train_one_epoch,
)
from .models import create_model, freeze_batchnorm, parse_model_name
from .plots import plot_curves
from .table import render_table
from .weights import CheckpointError, load_checkpoint, load_state, read_weights, save_weights

log = logging.getLogger("ecanet")


class ClassificationStep:
    """Loss and top-1/top-5 counts of one batch; remembers the unreadable files the loader skipped."""

    def __init__(self, device: torch.device, channels_last: bool = False, label_smoothing: float = 0.0) -> None:
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.label_smoothing = label_smoothing
        self.skipped: list[str] = []

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor, list[str]]) -> tuple[Tensor, dict]:
        x, y, bad = batch
        self.skipped.extend(bad)
        if len(y) == 0:
            return torch.zeros((), device=self.device), {"n": 0, "skipped": len(bad)}
        x = x.to(self.device, non_blocking=True, memory_format=self.memory_format)
        y = y.to(self.device, non_blocking=True)
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing if model.training else 0.0)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        return loss, {"n": len(y), "correct1": hits[:, 0].sum(), "correct5": hits.any(1).sum(), "skipped": len(bad)}


def _percent(totals: dict, key: str) -> float:
    return 100.0 * totals.get(key, 0.0) / max(totals["n"], 1)


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset, str]:
    """(train, val, description); the embedded digits dataset when no data is given."""
    if cfg.data is None and cfg.train_dir is None:
        train = Digits(True, cfg.image_size, cfg.seed, cfg.augment)
        return train, Digits(False, cfg.image_size, cfg.seed), "embedded digits"
    if cfg.data is not None and not Path(cfg.data).is_dir():
        raise DataError(f"--data: {cfg.data} is not a folder")
    train_dir = cfg.train_dir or str(Path(cfg.data) / "train")
    val_dir = cfg.val_dir or str(Path(cfg.data) / "val")
    train, val = image_folders(train_dir, val_dir, cfg.image_size, cfg.augment)
    return train, val, train_dir


def _loaders(cfg: TrainConfig, train: Dataset, val: Dataset, ctx: Dist) -> tuple[DataLoader, DataLoader]:
    sampler = DistributedSampler(
        train, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    common = dict(
        num_workers=cfg.workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=cfg.workers > 0,
        collate_fn=collate_skipping,
    )
    train_loader = DataLoader(train, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, **common)
    # Evaluation shards without padding (DistributedSampler would repeat samples to even out the shards).
    val_shard = Subset(val, range(ctx.rank, len(val), ctx.world_size))
    val_loader = DataLoader(val_shard, batch_size=cfg.batch_size, shuffle=False, **common)
    return train_loader, val_loader


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    """Multiplier of the base lr at iteration i: linear warmup, then the schedule by (fractional) epoch."""

    def factor(i: int) -> float:
        epoch = i / steps_per_epoch
        if epoch < cfg.warmup_epochs:
            return (i + 1) / (cfg.warmup_epochs * steps_per_epoch)
        if cfg.schedule == "step":
            return cfg.gamma ** int(epoch // cfg.step_size)
        if cfg.schedule == "exponential":
            return cfg.gamma ** int(epoch)
        if cfg.schedule == "cosine":
            span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
            return 0.5 * (1 + math.cos(math.pi * min((epoch - cfg.warmup_epochs) / span, 1.0)))
        return 1.0

    if cfg.schedule not in ("step", "exponential", "cosine", "constant"):
        raise ValueError(f"--schedule: unknown schedule {cfg.schedule!r}")
    return factor


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    model = create_model(cfg.model, num_classes=num_classes, eca_k=cfg.eca_k)
    if cfg.pretrained:
        report = load_state(model, read_weights(cfg.pretrained)[0], cfg.pretrained)
        log.info(
            "--pretrained %s: %d tensors copied; new: %d attention, %d head",
            cfg.pretrained,
            len(report.copied),
            len(report.new_attention),
            len(report.new_head),
        )
    if cfg.freeze_bn:
        freeze_batchnorm(model)
    if cfg.freeze_stages:
        frozen = ["conv1", "bn1"] + [f"layer{i + 1}" for i in range(cfg.freeze_stages)]
        for name, p in model.named_parameters():
            if name.split(".")[0] in frozen:
                p.requires_grad_(False)
    return model


def train(cfg: TrainConfig) -> dict:
    """Train ``cfg.model`` (and the models of ``cfg.compare`` alike) and return the run's summary, also
    written to OUT/summary.json."""
    ctx = init_distributed(cfg.device)
    try:
        summary = _train(cfg, ctx)
        if cfg.compare:
            summary["comparison"] = _compare(cfg, summary, ctx)
    finally:
        cleanup(ctx)
    return summary


def _train(cfg: TrainConfig, ctx: Dist) -> dict:
    out = Path(cfg.output)
    parse_model_name(cfg.model)  # an unknown name fails before any data is read
    embedded = cfg.data is None and cfg.train_dir is None
    cfg = replace(cfg, image_size=cfg.image_size or (16 if embedded else 224))
    torch.manual_seed(cfg.seed + ctx.rank)
    train_set, val_set, where = build_datasets(cfg)
    check_batch_size(train_set, cfg.batch_size, ctx.world_size, where)
    num_classes = cfg.num_classes or len(train_set.classes)
    cfg = replace(
        cfg, num_classes=num_classes, lr=cfg.lr or cfg.base_lr * cfg.batch_size * ctx.world_size / cfg.base_batch
    )

    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    model = build_model(cfg, num_classes)
    cost = complexity(model, (3, cfg.image_size, cfg.image_size))
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(ctx.device, memory_format=fmt)
    if cfg.sync_bn and ctx.device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA devices: torch's SyncBatchNorm runs on GPUs only")
    if cfg.sync_bn and ctx.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    elif cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"--optimizer: unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")
    train_loader, val_loader = _loaders(cfg, train_set, val_set, ctx)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, len(train_loader)))
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        if cfg.ema_decay
        else None
    )
    precision = precision_for(ctx.device, cfg.amp, cfg.amp_dtype)

    start_epoch, best_top1, records = 0, 0.0, []
    if cfg.resume is not None:
        path = Path(cfg.resume) if cfg.resume else out / "checkpoint.pt"
        ckpt = load_training_checkpoint(path)
        if ckpt.get("meta", {}).get("model") != cfg.model:
            raise CheckpointError(
                f"--resume: {path} is a checkpoint of {ckpt.get('meta', {}).get('model')}, not {cfg.model}"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if precision.scaler is not None and ckpt.get("scaler"):
            precision.scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        start_epoch, best_top1 = ckpt["epoch"] + 1, ckpt["best_top1"]
        set_rng_state(ckpt["rng"][ctx.rank] if ctx.rank < len(ckpt["rng"]) else ckpt["rng"][0])
        records = _read_records(out / "metrics.jsonl", start_epoch)

    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.json")
        log.info(
            "training %s on %s (%d classes) for %d epochs; output in %s", cfg.model, where, num_classes, cfg.epochs, out
        )
    writer = _tensorboard(out) if ctx.is_main else None
    runner = DistributedDataParallel(model) if ctx.enabled else model
    runner = torch.compile(runner) if cfg.compile else runner
    step = ClassificationStep(ctx.device, cfg.channels_last, cfg.label_smoothing)
    eval_model = ema.module if ema is not None else model

    started = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        train_loader.sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(runner, train_loader, step, optimizer, scheduler, precision, ctx, epoch, ema)
        va = evaluate_loop(eval_model, val_loader, step, precision, ctx)
        record = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": tr["loss_sum"] / max(tr["n"], 1),
            "train_top1": _percent(tr, "correct1"),
            "val_loss": va["loss_sum"] / max(va["n"], 1),
            "val_top1": _percent(va, "correct1"),
            "val_top5": _percent(va, "correct5"),
            "img_per_s": tr["n"] / max(tr["seconds"], 1e-9),
            "seconds": tr["seconds"] + va["seconds"],
            "skipped_images": int(tr.get("skipped", 0) + va.get("skipped", 0)),
        }
        if not (math.isfinite(record["train_loss"]) and math.isfinite(record["val_loss"])):
            raise TrainingError(f"non-finite loss in epoch {epoch}; last good checkpoint kept in {out}")
        records.append(record)
        if record["skipped_images"] and ctx.is_main:
            log.warning(
                "epoch %d: skipped %d unreadable images, e.g. %s", epoch, record["skipped_images"], step.skipped[0]
            )
        is_best = record["val_top1"] >= best_top1
        best_top1 = max(best_top1, record["val_top1"])
        rng = _gather_rng(ctx)
        if ctx.is_main:
            _write_epoch(out, record, writer)
            save_atomic(
                {
                    "model": model.state_dict(),
                    "meta": dict(model.config),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": precision.scaler.state_dict() if precision.scaler else None,
                    "ema": ema.state_dict() if ema is not None else None,
                    "epoch": epoch,
                    "best_top1": best_top1,
                    "rng": rng,
                    "config": asdict(cfg),
                },
                out / "checkpoint.pt",
            )
            if is_best:
                save_weights(eval_model, out / "best.safetensors")
            plot_curves(records, out / "curves.png")
            log.info(
                "epoch %d: train loss %.4f top-1 %.2f | val loss %.4f top-1 %.2f top-5 %.2f | %.1f img/s",
                epoch,
                record["train_loss"],
                record["train_top1"],
                record["val_loss"],
                record["val_top1"],
                record["val_top5"],
                record["img_per_s"],
            )
    barrier(ctx)
    summary = {
        "model": cfg.model,
        "data": where,
        "num_classes": num_classes,
        "epochs": cfg.epochs,
        "best_top1": best_top1,
        "final_top1": records[-1]["val_top1"] if records else None,
        "final_top5": records[-1]["val_top5"] if records else None,
        "params": cost["params"],
        "macs": cost["macs"],
        "train_time_s": time.perf_counter() - started,
        "world_size": ctx.world_size,
    }
    if ctx.is_main:
        save_weights(eval_model, out / "final.safetensors")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if writer is not None:
            writer.close()
    return summary


def _gather_rng(ctx: Dist) -> list[dict]:
    """RNG states of every process (rank order), so a resumed run draws the same numbers."""
    state = rng_state()
    if not ctx.enabled:
        return [state]
    gathered: list = [None] * ctx.world_size
    torch.distributed.all_gather_object(gathered, state)
    return gathered


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
            if key != "epoch":
                writer.add_scalar(key, value, record["epoch"])


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _compare(cfg: TrainConfig, main_summary: dict, ctx: Dist) -> list[dict]:
    """Train every model of ``cfg.compare`` with the same settings; rows of test accuracy side by side."""
    rows = [main_summary]
    for name in cfg.compare:
        other = replace(cfg, model=name, output=str(Path(cfg.output) / "compare" / name), compare=[], resume=None)
        rows.append(_train(other, ctx))
    keys = ("model", "params", "macs", "best_top1", "final_top1", "train_time_s")
    table = [{k: r[k] for k in keys} for r in rows]
    if ctx.is_main:
        (Path(cfg.output) / "comparison.json").write_text(json.dumps(table, indent=2))
    return table


def format_comparison(rows: list[dict]) -> str:
    body = [
        [
            r["model"],
            f"{r['params']:,}",
            f"{r['macs'] / 1e6:.2f}",
            f"{r['final_top1']:.2f}",
            f"{r['best_top1']:.2f}",
            f"{r['train_time_s']:.0f}",
        ]
        for r in rows
    ]
    return render_table(["model", "params", "MMACs", "test top-1 (%)", "best top-1 (%)", "train s"], body)


def evaluate(
    model: nn.Module,
    data: str | Path | Dataset,
    image_size: int = 224,
    batch_size: int = 64,
    workers: int = 2,
    device: str | None = None,
) -> dict[str, float]:
    """Top-1, top-5 (percent) and mean loss of ``model`` on an image folder (or a dataset)."""
    ctx = Dist(device=torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    dataset = data if isinstance(data, Dataset) else ImageFolder(data, eval_transform(image_size), flag="--val-dir")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skipping)
    model.to(ctx.device)
    totals = evaluate_loop(model, loader, ClassificationStep(ctx.device), Precision(ctx.device.type), ctx)
    return {
        "top1": _percent(totals, "correct1"),
        "top5": _percent(totals, "correct5"),
        "loss": totals["loss_sum"] / max(totals["n"], 1),
        "n": int(totals["n"]),
        "skipped": int(totals.get("skipped", 0)),
    }


def load_for_eval(weights: str, model_name: str | None, num_classes: int | None) -> nn.Module:
    """The model behind ``weights``: rebuilt from the file, or ``model_name`` with the file loaded into it."""
    if model_name is None:
        return load_checkpoint(weights)
    model = create_model(model_name, num_classes=num_classes)
    return load_checkpoint(weights, model=model)
