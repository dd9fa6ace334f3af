"""Classification evaluation: top-1, top-5 and loss of a model on an image folder."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..training.distributed import Dist
from ..training.engine import Precision, evaluate_loop
from .data import ImageFolder, collate_skipping, eval_transform
from .train import ClassificationStep, percent


def evaluate(
    model: nn.Module,
    data: str | Path | Dataset,
    image_size: int = 224,
    batch_size: int = 64,
    workers: int = 2,
    device: str | None = None,
) -> dict[str, float]:
    """Top-1, top-5 (percent) and mean loss of ``model`` on an image folder (or a dataset)."""
    proc = Dist(device=torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    dataset = data if isinstance(data, Dataset) else ImageFolder(data, eval_transform(image_size), flag="--val-dir")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skipping)
    model.to(proc.device)
    totals = evaluate_loop(model, loader, ClassificationStep(proc.device), Precision(proc.device.type), proc)
    return {
        "top1": percent(totals, "correct1"),
        "top5": percent(totals, "correct5"),
        "loss": totals["loss_sum"] / max(totals["n"], 1),
        "n": int(totals["n"]),
        "skipped": int(totals.get("skipped", 0)),
    }
