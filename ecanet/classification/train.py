"""Classification training: ``ecanet.train(config)``.

This module builds the data and the model and defines the classification task (its step, validation and
record fields); the epochs themselves run in the shared loop, ``ecanet.training.fit``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..adapt import attach_eca, create_external, is_external, replace_se, replay
from ..complexity import complexity
from ..errors import DataError
from ..models import create_model, freeze_batchnorm, parse_model_name
from ..studies.comparison import Arm, summarize, with_speed
from ..studies.plots import plot_curves
from ..training.distributed import Dist, process_group
from ..training.engine import Precision, evaluate_loop
from ..training.fit import Task, eval_loader, fit, scaled_lr, train_loader
from ..weights import FRESH_PARTS, load_state, read_weights, with_file_widths
from .config import TrainConfig
from .data import Digits, InMemory, collate_skipping, image_folders, split_folder

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


def percent(totals: dict, key: str) -> float:
    return 100.0 * totals.get(key, 0.0) / max(totals["n"], 1)


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset, str]:
    """(train, val, description); the embedded digits dataset when no data is given."""
    if cfg.data is None and cfg.train_dir is None:
        train = Digits(True, cfg.image_size, cfg.seed, cfg.augment)
        return train, Digits(False, cfg.image_size, cfg.seed), "embedded digits"
    if cfg.data is not None and not Path(cfg.data).is_dir():
        raise DataError(f"--data: {cfg.data} is not a folder")
    train_dir = cfg.train_dir or str(Path(cfg.data) / "train")
    if cfg.val_split is not None:
        if cfg.val_dir is not None:
            raise ValueError("--val-dir and --val-split: give one source of validation images")
        train, val = split_folder(train_dir, cfg.val_split, cfg.split_seed, cfg.image_size, cfg.augment)
    else:
        val_dir = cfg.val_dir or str(Path(cfg.data) / "val")
        train, val = image_folders(train_dir, val_dir, cfg.image_size, cfg.augment)
    if cfg.in_memory:
        train, val = InMemory(train), InMemory(val)
    return train, val, train_dir


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model of ``cfg``: a zoo or torchvision/timm network, ``--pretrained`` loaded into it (the file's own
    ECA adaptation replayed first), then ``--replace-se`` / ``--attach-eca``, then the freezing flags."""
    if is_external(cfg.model):
        zoo_only = (
            ("--eca-k", cfg.eca_k != "released"),
            ("--freeze-stages", cfg.freeze_stages),
            ("--widths", cfg.widths),
        )
        for flag, given in zoo_only:
            if given:
                raise ValueError(f"{flag}: for zoo models, not {cfg.model}")
        model = create_external(cfg.model, num_classes)
    else:
        model = create_model(cfg.model, num_classes=num_classes, eca_k=cfg.eca_k, widths=cfg.widths)
    if cfg.pretrained:
        state, meta = read_weights(cfg.pretrained)
        source = f"--pretrained {cfg.pretrained}"
        replay(with_file_widths(model, meta, source), meta.get("adapt", ()))
        load_state(model, state, source, fresh=FRESH_PARTS)
    if cfg.replace_se:
        log.info("%s", replace_se(model))
    if cfg.attach_eca:
        log.info("%s", attach_eca(model))
    if cfg.freeze_bn:
        freeze_batchnorm(model)
    if cfg.freeze_stages:
        model.freeze_stages(cfg.freeze_stages)
    return model


def train(cfg: TrainConfig, epoch_fields: Callable[[nn.Module], dict] | None = None) -> dict:
    """Train ``cfg.model`` (and the models of ``cfg.compare`` alike) and return the run's summary, also
    written to OUT/summary.json. ``epoch_fields(model)``: fields added to every epoch's record of the main
    model (see ``Task``)."""
    with process_group(cfg.device) as proc:
        summary = _train(cfg, proc, epoch_fields)
        if cfg.compare:
            summary["comparison"] = _compare(cfg, summary, proc)
    return summary


def _train(cfg: TrainConfig, proc: Dist, epoch_fields: Callable[[nn.Module], dict] | None = None) -> dict:
    out = Path(cfg.output)
    if not is_external(cfg.model):
        parse_model_name(cfg.model)  # an unknown name fails before any data is read
    embedded = cfg.data is None and cfg.train_dir is None
    cfg = replace(cfg, image_size=cfg.image_size or (16 if embedded else 224))
    torch.manual_seed(cfg.seed + proc.rank)
    train_set, val_set, where = build_datasets(cfg)
    loader = train_loader(train_set, cfg, proc, collate_skipping, where)
    num_classes = cfg.num_classes or len(train_set.classes)
    cfg = replace(cfg, num_classes=num_classes, lr=scaled_lr(cfg, proc.world_size))

    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    model = build_model(cfg, num_classes)
    model.config["image_size"] = cfg.image_size  # for ecanet predict, with the class names where they fit
    if len(train_set.classes) == num_classes:
        model.config["classes"] = list(train_set.classes)
    cost = complexity(model, (3, cfg.image_size, cfg.image_size))
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(proc.device, memory_format=fmt)
    if cfg.sync_bn and proc.device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA devices: torch's SyncBatchNorm runs on GPUs only")
    if cfg.sync_bn and proc.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    val_loader = eval_loader(val_set, cfg, proc, collate_skipping)
    step = ClassificationStep(proc.device, cfg.channels_last, cfg.label_smoothing)

    def validate(eval_model: nn.Module, precision: Precision) -> tuple[dict, float]:
        va = evaluate_loop(eval_model, val_loader, step, precision, proc)
        fields = {
            "val_loss": va["loss_sum"] / max(va["n"], 1),
            "val_top1": percent(va, "correct1"),
            "val_top5": percent(va, "correct5"),
            "val_seconds": va["seconds"],
            "val_skipped": int(va.get("skipped", 0)),
        }
        return fields, fields["val_top1"]

    def train_fields(tr: dict) -> dict:
        return {"train_top1": percent(tr, "correct1"), "skipped_images": int(tr.get("skipped", 0))}

    def describe(r: dict) -> str:
        return (
            f"train loss {r['train_loss']:.4f} top-1 {r['train_top1']:.2f} | val loss {r['val_loss']:.4f} "
            f"top-1 {r['val_top1']:.2f} top-5 {r['val_top5']:.2f} | {r['img_per_s']:.1f} img/s"
        )

    if proc.is_main:
        log.info(
            "training %s on %s (%d classes) for %d epochs; output in %s", cfg.model, where, num_classes, cfg.epochs, out
        )

    def progress(totals: dict) -> dict:
        return {"acc": f"{percent(totals, 'correct1'):.1f}"}

    task = Task(model, loader, step, validate, describe, train_fields, plot_curves, progress, epoch_fields)
    result = fit(task, cfg, proc)
    records = result["records"]
    summary = {
        "model": cfg.model,
        "data": where,
        "num_classes": num_classes,
        "epochs": result["epochs"],
        "best_top1": max((r["val_top1"] for r in records), default=None),
        "final_top1": records[-1]["val_top1"] if records else None,
        "final_top5": records[-1]["val_top5"] if records else None,
        "params": cost["params"],
        "macs": cost["macs"],
        "train_time_s": result["train_time_s"],
        "world_size": proc.world_size,
    }
    if proc.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _compare(cfg: TrainConfig, main_summary: dict, proc: Dist) -> dict:
    """Train every model of ``cfg.compare`` with the same settings and seed (under OUT/compare/<model>), and
    summarise them as ``ecanet compare`` does (one seed: no interval); also OUT/comparison.json."""
    runs = {cfg.model: [with_speed(main_summary, Path(cfg.output), cfg.seed)]}
    for name in cfg.compare:
        other = replace(cfg, model=name, output=str(Path(cfg.output) / "compare" / name), compare=[], resume=None)
        runs[name] = [with_speed(_train(other, proc), Path(other.output), cfg.seed)]
    result = summarize([Arm(name, name, cfg.eca_k) for name in runs], runs)
    if proc.is_main:
        (Path(cfg.output) / "comparison.json").write_text(json.dumps(result, indent=2))
    return result
