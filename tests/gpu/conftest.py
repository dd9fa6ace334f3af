"""The GPU tier: every test here is marked ``cuda`` and skips, saying why, on a machine without one.
Run it with ``pytest -m cuda`` (benchmarks/gpu.sh does, then times the zoo on the GPU)."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "tests/gpu/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.cuda)
            if not torch.cuda.is_available():
                item.add_marker(skip)
