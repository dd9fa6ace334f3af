"""Data the tests make for themselves: tiny image folders and COCO instances files."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecanet.errors import EXTRAS

COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


def make_image_folder(root: Path, per_class: dict[str, int], size: int = 16, seed: int = 0) -> Path:
    """Class-coloured noisy squares: a tiny, learnable ImageFolder split."""
    rng = np.random.default_rng(seed)
    for cls, n in per_class.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = np.array(COLORS[cls], dtype=np.float32)
            img = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    return root


def add_box(coco: dict, image_id: int, category_id: int, x: int, y: int, w: int, h: int) -> None:
    """Append a rectangle (box and polygon) to a COCO instances dict."""
    coco["annotations"].append(
        {
            "id": len(coco["annotations"]) + 1,
            "image_id": image_id,
            "category_id": category_id,
            "bbox": [x, y, w, h],
            "area": w * h,
            "iscrowd": 0,
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
        }
    )


def make_coco(root: Path, n_images: int = 4, size: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """Images with one or two bright rectangles each (categories 3 and 7) and their COCO instances JSON."""
    import json

    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "bright"}, {"id": 7, "name": "dim"}]}
    for i in range(1, n_images + 1):
        arr = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
        for cat, value in ((3, 230), (7, 140))[: 1 + i % 2]:
            x, y = (int(v) for v in rng.integers(0, size // 2, 2))
            w, h = (int(v) for v in rng.integers(size // 4, size // 2, 2))
            arr[y : y + h, x : x + w] = value
            add_box(coco, i, cat, x, y, w, h)
        Image.fromarray(arr).save(images / f"{i}.png")
        coco["images"].append({"id": i, "file_name": f"{i}.png", "width": size, "height": size})
    ann = root / "instances.json"
    ann.write_text(json.dumps(coco))
    return images, ann


def require_extra(extra: str) -> None:
    """Skip the calling test (or module) when the optional extra is not installed, saying which: a base
    install runs everything else; CI installs every extra and fails on such a skip."""
    for module in EXTRAS[extra]:
        pytest.importorskip(module, reason=f'needs the "{extra}" extra')


def make_segmentation_data(
    root: Path, n: int = 8, size: tuple[int, int] = (48, 64), seed: int = 0
) -> tuple[Path, Path]:
    """Images of a red and a blue rectangle (classes 1 and 2) on a dark background (0), their palette-PNG
    masks (VOC's format) with the top row set to the ignore index 255; returns (images, masks)."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    h, w = size
    for i in range(n):
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        for cls, colour in ((1, (230, 40, 40)), (2, (40, 40, 230))):
            y, x = int(rng.integers(0, h - h // 3)), int(rng.integers(0, w - w // 3))
            img[y : y + h // 3, x : x + w // 3] = colour
            mask[y : y + h // 3, x : x + w // 3] = cls
        mask[0] = 255
        Image.fromarray(img).save(images / f"{i}.png")
        m = Image.fromarray(mask)
        m.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
        m.save(masks / f"{i}.png")
    return images, masks
