"""Detection training and evaluation on COCO-format data, on the shared loop (``ecanet.training.fit``), with the
settings of ``DetectConfig`` (the 1x schedule by default)."""

from __future__ import annotations

import logging
from dataclasses import replace

import torch
from torch import Tensor, nn

from ..studies.plots import plot_detection_curves
from ..training.distributed import Dist, process_group
from ..training.engine import Precision
from ..training.fit import Task, fit, scaled_lr, train_loader, write_summary
from .config import DetectConfig
from .data import CocoDetection, collate
from .evaluate import METRICS, coco_evaluate
from .models import create_detector

log = logging.getLogger("ecanet")


class DetectionStep:
    """Sum of the detector's losses for one batch of images and targets."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, model: nn.Module, batch: tuple) -> tuple[Tensor, dict]:
        images, targets = batch
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets]
        losses = model(images, targets)
        return sum(losses.values()), {"n": len(images)}


def train_detector(cfg: DetectConfig) -> dict:
    """Train a detector; returns the summary (also OUT/summary.json) with ``bbox`` (and ``segm``) metrics."""
    with process_group(cfg.device) as proc:
        return _train(cfg, proc)


def _train(cfg: DetectConfig, proc: Dist) -> dict:
    for flag, value in (("--images", cfg.images), ("--annotations", cfg.annotations)):
        if value is None:
            raise ValueError(f"{flag} is required")
    masks = cfg.model == "mask_rcnn"
    train_set = CocoDetection(cfg.images, cfg.annotations, masks=masks)
    val_set = CocoDetection(cfg.val_images or cfg.images, cfg.val_annotations or cfg.annotations, masks=masks)
    loader = train_loader(train_set, cfg, proc, collate, cfg.images)
    cfg = replace(cfg, lr=scaled_lr(cfg, proc.world_size))
    torch.manual_seed(cfg.seed)
    model = create_detector(
        cfg.model,
        cfg.backbone,
        len(train_set.classes) + 1,
        cfg.backbone_weights,
        cfg.trainable_layers,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
    ).to(proc.device)
    model.config["classes"] = train_set.classes

    def validate(eval_model: nn.Module, precision: Precision) -> tuple[dict, float]:
        # Every process evaluates the whole validation set (pycocotools needs all detections in one place).
        with precision.autocast():
            metrics = coco_evaluate(eval_model, val_set, cfg.batch_size, str(proc.device))
        fields = {f"{kind}_{name}": value for kind, values in metrics.items() for name, value in values.items()}
        return fields, fields["bbox_AP"]

    def describe(r: dict) -> str:
        segm = f" | mask AP {r['segm_AP']:.2f}" if "segm_AP" in r else ""
        return f"train loss {r['train_loss']:.4f} | box AP {r['bbox_AP']:.2f}{segm} | {r['img_per_s']:.1f} img/s"

    task = Task(model, loader, DetectionStep(proc.device), validate, describe, plot=plot_detection_curves)
    result = fit(task, cfg, proc)
    last = result["records"][-1] if result["records"] else {}
    kinds = ["bbox", "segm"] if masks else ["bbox"]
    return write_summary(
        cfg,
        proc,
        result,
        model,
        backbone=cfg.backbone,
        num_classes=len(train_set.classes) + 1,
        **{kind: {m: last.get(f"{kind}_{m}") for m in METRICS} for kind in kinds},
        best_bbox_AP=result["best_score"],
    )
