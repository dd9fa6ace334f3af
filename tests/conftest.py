from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


@pytest.fixture
def image_data(tmp_path) -> Path:
    root = tmp_path / "data"
    make_image_folder(root / "train", {c: 8 for c in COLORS}, seed=0)
    make_image_folder(root / "val", {c: 4 for c in COLORS}, seed=1)
    return root
