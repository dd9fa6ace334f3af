"""Predicted masks of images: raw class-index PNGs (with the VOC palette, so viewers show colours and
readers get indices) and colour overlays on the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import draw_segmentation_masks

from ..images import load_rgb
from .data import MEAN, STD


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map: class i's colour from the bits of i (0 black, 1 dark red, ...)."""
    colours = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours.append((r, g, b))
    return colours


@torch.no_grad()
def predict_masks(model: nn.Module, paths: list[str | Path], out: str | Path, image_size: int = 480) -> list[dict]:
    """OUT/<stem>_mask.png (class per pixel, palette PNG) and OUT/<stem>_overlay.png for every image; the
    image is resized to ``image_size`` for the model and the logits back to the image's size."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    device = next(model.parameters()).device
    palette = voc_palette()
    rows = []
    for path in paths:
        image = TF.to_image(load_rgb(str(path)))
        x = TF.normalize(TF.to_dtype(TF.resize(image, [image_size, image_size]), torch.float32, scale=True), MEAN, STD)
        logits = model(x[None].to(device))["out"]
        logits = F.interpolate(logits.float(), size=image.shape[-2:], mode="bilinear", align_corners=False)
        mask = logits.argmax(1)[0].cpu()
        stem = Path(path).stem
        raw = Image.fromarray(mask.numpy().astype(np.uint8))  # "L"; a palette makes it "P"
        raw.putpalette([v for colour in palette for v in colour])
        raw.save(out / f"{stem}_mask.png")
        classes = [int(c) for c in mask.unique() if c != 0]
        drawn = image
        if classes:
            drawn = draw_segmentation_masks(
                image, torch.stack([mask == c for c in classes]), 0.5, [palette[c] for c in classes]
            )
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(out / f"{stem}_overlay.png")
        counts = torch.bincount(mask.flatten())
        rows.append({"image": str(path), "pixels": {int(c): int(n) for c, n in enumerate(counts) if n}})
    return rows
