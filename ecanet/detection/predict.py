"""Detections drawn on images (boxes, masks, labels) and written as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..images import load_rgb


@torch.no_grad()
def predict(model: nn.Module, paths: list[str | Path], out: str | Path, score_threshold: float = 0.5) -> list[dict]:
    """OUT/<image>_pred.png per image and OUT/detections.json; returns the detections."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = model.config.get("classes") or []
    model.eval()
    rows = []
    for path in paths:
        image = TF.to_image(load_rgb(str(path)))
        det = model([TF.to_dtype(image, torch.float32, scale=True)])[0]
        keep = det["scores"] >= score_threshold
        boxes, labels, scores = det["boxes"][keep], det["labels"][keep].tolist(), det["scores"][keep].tolist()
        names = [classes[i - 1] if 0 < i <= len(classes) else str(i) for i in labels]
        drawn = image
        if "masks" in det and keep.any():
            drawn = draw_segmentation_masks(drawn, det["masks"][keep][:, 0] > 0.5, alpha=0.4)
        drawn = draw_bounding_boxes(drawn, boxes, [f"{n} {s:.2f}" for n, s in zip(names, scores)], width=2)
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(out / f"{Path(path).stem}_pred.png")
        rows.append({"image": str(path), "boxes": boxes.tolist(), "labels": names, "scores": scores})
    (out / "detections.json").write_text(json.dumps(rows, indent=2))
    return rows
