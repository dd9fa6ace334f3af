"""Segmentation training and evaluation on the shared loop (``ecanet.training.fit``), with the settings of
``SegmentConfig`` (torchvision's segmentation reference by default)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from ..errors import DataError, require
from ..models import parse_model_name
from ..studies.plots import plot_segmentation_curves
from ..training.config import LoopConfig
from ..training.distributed import Dist, process_group
from ..training.engine import Precision, evaluate_loop
from ..training.fit import Task, eval_loader, fit, scaled_lr, train_loader, write_summary
from .config import SegmentConfig
from .data import SegmentationData, check_masks, eval_transform, folder_pairs, train_transform, voc_pairs
from .metrics import confusion_matrix, segmentation_scores
from .models import CANET_OPTIONS, KINDS, SMP_KINDS, create_segmenter

LOSSES = ("ce", "dice", "ce+dice")
AUX_WEIGHT = 0.5  # the reference's weight of the auxiliary head's loss


def build_loss(name: str, ignore_index: int = 255) -> Callable[[Tensor, Tensor], Tensor]:
    """Cross-entropy (torch), Dice (segmentation-models-pytorch's), or their sum; ignored pixels left out."""
    ce = nn.CrossEntropyLoss(ignore_index=ignore_index)
    if name == "ce":
        return ce
    if name not in LOSSES:
        raise ValueError(f"--loss: unknown loss {name!r}; choose one of {LOSSES}")
    smp = require("segmentation_models_pytorch", "segmentation")
    dice = smp.losses.DiceLoss("multiclass", ignore_index=ignore_index)
    return dice if name == "dice" else lambda logits, target: ce(logits, target) + dice(logits, target)


class SegmentationStep:
    """The loss of a batch (plus 0.5 x the auxiliary head's, where there is one); in evaluation also the
    batch's confusion matrix, which the engine sums over batches and processes."""

    def __init__(self, device: torch.device, loss: Callable, num_classes: int, ignore_index: int = 255) -> None:
        self.device, self.loss, self.num_classes, self.ignore_index = device, loss, num_classes, ignore_index

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict]:
        images, masks = (t.to(self.device, non_blocking=True) for t in batch)
        outputs = model(images)
        loss = self.loss(outputs["out"].float(), masks)
        if "aux" in outputs:
            loss = loss + AUX_WEIGHT * self.loss(outputs["aux"].float(), masks)
        counts: dict = {"n": len(images)}
        if not model.training:
            counts["confusion"] = confusion_matrix(outputs["out"].argmax(1), masks, self.num_classes, self.ignore_index)
        return loss, counts


def evaluate_segmenter(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 4,
    workers: int = 0,
    proc: Dist | None = None,
    precision: Precision | None = None,
    loss: str = "ce",
    ignore_index: int = 255,
) -> dict:
    """Loss, mIoU, mDice, pixel accuracy and per-class IoU / Dice of ``model`` on ``dataset``; under DDP
    each process evaluates its shard and the confusion matrices are summed, so the result equals one
    process's."""
    proc = proc or Dist(device=next(model.parameters()).device)
    precision = precision or Precision(proc.device.type)
    if len(dataset) < proc.world_size:
        raise DataError(f"the validation set has {len(dataset)} images, fewer than the {proc.world_size} processes")
    cfg = LoopConfig(batch_size=batch_size, workers=workers)
    step = SegmentationStep(proc.device, build_loss(loss, ignore_index), model.config["num_classes"], ignore_index)
    totals = evaluate_loop(
        model.to(proc.device), eval_loader(dataset, cfg, proc, default_collate), step, precision, proc
    )
    return {
        "loss": totals["loss_sum"] / max(totals["n"], 1),
        **segmentation_scores(totals["confusion"]),
        "n": int(totals["n"]),
    }


def data_pairs(cfg: SegmentConfig) -> tuple[list, list, str]:
    """(training pairs, validation pairs, where the training data is), from --voc or the folder flags."""
    if cfg.voc:
        if cfg.images or cfg.masks:
            raise ValueError("--voc and --images/--masks: give one source of data")
        return voc_pairs(cfg.voc, "train"), voc_pairs(cfg.voc, "val"), cfg.voc
    for flag, value in (("--images", cfg.images), ("--masks", cfg.masks)):
        if value is None:
            raise ValueError(f"{flag} is required (or --voc DIR)")
    train = folder_pairs(cfg.images, cfg.masks)
    val = folder_pairs(cfg.val_images or cfg.images, cfg.val_masks or cfg.masks, ("--val-images", "--val-masks"))
    return train, val, cfg.images


def train_segmenter(cfg: SegmentConfig) -> dict:
    """Train a segmenter; returns the summary (also OUT/summary.json) with the final and best mIoU."""
    with process_group(cfg.device) as proc:
        return _train(cfg, proc)


def _train(cfg: SegmentConfig, proc: Dist) -> dict:
    if cfg.model not in KINDS:
        raise ValueError(f"--model: unknown segmenter {cfg.model!r}; choose one of {KINDS}")
    if cfg.model != "canet":
        parse_model_name(cfg.backbone)  # an unknown backbone fails before any data is read, as a missing extra
    if cfg.model in SMP_KINDS:
        require("segmentation_models_pytorch", "segmentation")
    loss = build_loss(cfg.loss, cfg.ignore_index)
    train_pairs, val_pairs, where = data_pairs(cfg)
    default = 21 if cfg.voc else 2 if cfg.masks_as == "foreground" else None
    num_classes = check_masks(train_pairs, cfg.masks_as, cfg.ignore_index, cfg.num_classes or default)
    check_masks(val_pairs, cfg.masks_as, cfg.ignore_index, num_classes)
    train_set = SegmentationData(train_pairs, train_transform(cfg.image_size, cfg.ignore_index), cfg.masks_as)
    val_set = SegmentationData(val_pairs, eval_transform(cfg.image_size), cfg.masks_as)
    loader = train_loader(train_set, cfg, proc, default_collate, where)
    cfg = replace(cfg, num_classes=num_classes, lr=scaled_lr(cfg, proc.world_size))
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    canet = {k: getattr(cfg, k) for k in CANET_OPTIONS}
    model = create_segmenter(
        cfg.model, cfg.backbone, num_classes, cfg.backbone_weights, cfg.output_stride, cfg.aux_loss, **canet
    ).to(proc.device)
    step = SegmentationStep(proc.device, loss, num_classes, cfg.ignore_index)

    def validate(eval_model: nn.Module, precision: Precision) -> tuple[dict, float]:
        metrics = evaluate_segmenter(
            eval_model, val_set, cfg.batch_size, cfg.workers, proc, precision, cfg.loss, cfg.ignore_index
        )
        fields = {f"val_{k}": v for k, v in metrics.items() if k != "n"}
        return fields, fields["val_mIoU"]

    def describe(r: dict) -> str:
        return (
            f"train loss {r['train_loss']:.4f} | val mIoU {r['val_mIoU']:.2f} | pixel acc {r['val_pixel_acc']:.2f}"
            f" | {r['img_per_s']:.1f} img/s"
        )

    task = Task(model, loader, step, validate, describe, plot=plot_segmentation_curves)
    result = fit(task, cfg, proc)
    last = result["records"][-1] if result["records"] else {}
    return write_summary(
        cfg,
        proc,
        result,
        model,
        backbone=cfg.backbone,
        num_classes=num_classes,
        **{k: last.get(f"val_{k}") for k in ("mIoU", "mDice", "pixel_acc", "iou", "dice")},
        best_mIoU=result["best_score"],
    )
