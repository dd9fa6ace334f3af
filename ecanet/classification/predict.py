"""Classify new images with trained weights: the top-k classes per image, by name where the weights record
the training folder's class names (ImageFolder order), with their probabilities."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..images import IMAGE_SUFFIXES, load_rgb
from .data import eval_transform


def expand_images(specs: Sequence[str]) -> list[Path]:
    """Image files from files, folders (every image below, sorted) and glob patterns, in the order given; a
    spec that names nothing is a ValueError naming it."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.exists():
            matches = [path]
        else:
            matches = [Path(p) for p in sorted(glob.glob(spec, recursive=True)) if Path(p).is_file()]
        if not matches:
            raise ValueError(f"{spec}: no such image file, folder or pattern")
        found += matches
    return found


def class_names(model: nn.Module) -> list[str] | None:
    """The class names the weights record (the training folder's, in ImageFolder order), if any."""
    names = getattr(model, "config", {}).get("classes")
    return list(names) if names else None


@torch.no_grad()
def predict(
    model: nn.Module, paths: Sequence[Path], image_size: int, top_k: int = 5, device: str | torch.device = "cpu"
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Per readable image ``{"image", "top": [{"index", "class", "probability"}, ...]}`` (``class`` is the
    name, or the index where the weights record none), and (path, reason) for each image that could not be
    read: the others are still answered."""
    model = model.eval().to(device)
    transform, names = eval_transform(image_size), class_names(model)
    results, failed = [], []
    for path in paths:
        try:
            x = transform(load_rgb(str(path))).unsqueeze(0).to(device)
        except OSError as e:  # unreadable, truncated, not an image
            failed.append((path, str(e).splitlines()[0] if str(e) else type(e).__name__))
            continue
        probs = model(x).float().softmax(1)[0]
        top = probs.topk(min(top_k, probs.numel()))
        results.append(
            {
                "image": str(path),
                "top": [
                    {"index": int(i), "class": names[i] if names else str(int(i)), "probability": float(p)}
                    for p, i in zip(top.values, top.indices)
                ],
            }
        )
    return results, failed
