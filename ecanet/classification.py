"""Classification training and evaluation: ``ecanet.train(config)`` and ``ecanet.evaluate(...)``.

This module builds the data and the model and defines the classification task (its step, validation and
record fields); the epochs themselves run in the shared loop, ``ecanet.fit``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .complexity import complexity
from .config import TrainConfig
from .data import DataError, Digits, ImageFolder, check_batch_size, collate_skipping, eval_transform, image_folders
from .distributed import Dist, cleanup, init_distributed
from .engine import Precision, evaluate_loop
from .fit import Task, fit
from .models import create_model, freeze_batchnorm, parse_model_name
from .plots import plot_curves
from .table import render_table
from .weights import FRESH_PARTS, load_state, read_weights

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


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    model = create_model(cfg.model, num_classes=num_classes, eca_k=cfg.eca_k)
    if cfg.pretrained:
        report = load_state(model, read_weights(cfg.pretrained)[0], cfg.pretrained, fresh=FRESH_PARTS)
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
        model.freeze_stages(cfg.freeze_stages)
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
    train_loader, val_loader = _loaders(cfg, train_set, val_set, ctx)
    step = ClassificationStep(ctx.device, cfg.channels_last, cfg.label_smoothing)

    def validate(eval_model: nn.Module, precision: Precision) -> tuple[dict, float]:
        va = evaluate_loop(eval_model, val_loader, step, precision, ctx)
        fields = {
            "val_loss": va["loss_sum"] / max(va["n"], 1),
            "val_top1": _percent(va, "correct1"),
            "val_top5": _percent(va, "correct5"),
            "val_seconds": va["seconds"],
            "val_skipped": int(va.get("skipped", 0)),
        }
        return fields, fields["val_top1"]

    def train_fields(tr: dict) -> dict:
        return {
            "train_loss": tr["loss_sum"] / max(tr["n"], 1),
            "train_top1": _percent(tr, "correct1"),
            "img_per_s": tr["n"] / max(tr["seconds"], 1e-9),
            "seconds": tr["seconds"],
            "skipped_images": int(tr.get("skipped", 0)),
        }

    def describe(r: dict) -> str:
        return (
            f"train loss {r['train_loss']:.4f} top-1 {r['train_top1']:.2f} | val loss {r['val_loss']:.4f} "
            f"top-1 {r['val_top1']:.2f} top-5 {r['val_top5']:.2f} | {r['img_per_s']:.1f} img/s"
        )

    if ctx.is_main:
        log.info(
            "training %s on %s (%d classes) for %d epochs; output in %s", cfg.model, where, num_classes, cfg.epochs, out
        )
    task = Task(model, train_loader, step, validate, train_fields, describe, plot_curves)
    result = fit(task, cfg, ctx)
    records = result["records"]
    summary = {
        "model": cfg.model,
        "data": where,
        "num_classes": num_classes,
        "epochs": cfg.epochs,
        "best_top1": max((r["val_top1"] for r in records), default=None),
        "final_top1": records[-1]["val_top1"] if records else None,
        "final_top5": records[-1]["val_top5"] if records else None,
        "params": cost["params"],
        "macs": cost["macs"],
        "train_time_s": result["train_time_s"],
        "world_size": ctx.world_size,
    }
    if ctx.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


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
