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
