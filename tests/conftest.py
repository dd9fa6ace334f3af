"""Fixtures shared by every test area; data makers live in tests/helpers.py."""

import os
from pathlib import Path

import pytest

from tests.helpers import COLORS, make_image_folder


def pytest_collection_modifyitems(config, items):
    """``pytest`` alone runs the quick tier (no ``slow`` test); CI (``CI=true``) and any ``-m`` expression run
    what they select: ``-m "slow or not slow"`` is everything."""
    if os.environ.get("CI") or config.getoption("markexpr"):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


@pytest.fixture
def image_data(tmp_path) -> Path:
    root = tmp_path / "data"
    make_image_folder(root / "train", {c: 8 for c in COLORS}, seed=0)
    make_image_folder(root / "val", {c: 4 for c in COLORS}, seed=1)
    return root


@pytest.fixture
def trained_run(image_data, tmp_path) -> Path:
    """A finished 2-epoch eca_resnet20 run on ``image_data``; returns its output folder."""
    from ecanet.classification import train
    from ecanet.classification.config import resolve

    out = tmp_path / "run"
    train(
        resolve(
            model="eca_resnet20",
            data=str(image_data),
            output=str(out),
            epochs=2,
            image_size=16,
            batch_size=8,
            workers=0,
            lr=0.05,
            compare=[],
        )
    )
    return out
