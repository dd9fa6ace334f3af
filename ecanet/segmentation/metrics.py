"""Segmentation metrics from a confusion matrix: mean and per-class IoU, Dice (F1) and pixel accuracy.

A confusion matrix is what torchvision's segmentation reference accumulates: it sums exactly over
batches and over processes (one all-reduce), so a DDP evaluation equals a single-process one. Classes that
appear neither in the masks nor in the predictions have no IoU (NaN) and are left out of the means.
"""

from __future__ import annotations

import torch
from torch import Tensor


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """(num_classes, num_classes) counts, row = true class, column = predicted; ignored pixels left out."""
    keep = target != ignore_index
    index = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_scores(confusion: Tensor) -> dict:
    """mIoU, mDice and pixel accuracy (percent) and the per-class IoU and Dice lists (None where a class is
    absent from both masks and predictions)."""
    cm = confusion.double()
    tp = cm.diag()
    truth, predicted = cm.sum(1), cm.sum(0)
    union = truth + predicted - tp
    iou = tp / union  # NaN for an absent class (0 / 0)
    dice = 2 * tp / (truth + predicted)
    total = cm.sum()

    def listed(values: Tensor) -> list[float | None]:
        return [None if torch.isnan(v) else float(v) * 100 for v in values]

    return {
        "mIoU": float(iou.nanmean()) * 100 if union.any() else 0.0,
        "mDice": float(dice.nanmean()) * 100 if union.any() else 0.0,
        "pixel_acc": float(tp.sum() / total) * 100 if total else 0.0,
        "iou": listed(iou),
        "dice": listed(dice),
    }
