"""Checkpoint files: the training checkpoint's format (written and read here only), every RNG's state, and
atomic writes (a temporary file, then a rename: a crash never leaves a truncated file in place of the last
good one), which ``save_weights`` uses too. Files are read with weights-only loading."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError, TrainingError

# What a training checkpoint holds; "model" and "meta" also make it readable by ``read_weights``.
KEYS = ("model", "meta", "optimizer", "scheduler", "scaler", "ema", "epoch", "best_score", "rng", "config")


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` then rename tmp to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def rng_state() -> dict:
    """Every RNG the loop draws from, as tensors and plain values (weights-only loadable)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(py_state),
        "python_version": py_version,
        "python_gauss": py_gauss,
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():  # CUDA only
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():  # CUDA only
        torch.cuda.set_rng_state_all(state["cuda"])


def is_training_checkpoint(obj: object) -> bool:
    """Whether ``obj`` has this format's weights part (``{"model": state dict, "meta": ...}``)."""
    return isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping)


def save_training_checkpoint(path: Path, **state) -> Path:
    """Write a training checkpoint with exactly the fields of ``KEYS``."""
    if set(state) != set(KEYS):
        raise ValueError(f"training checkpoint fields: expected {sorted(KEYS)}, got {sorted(state)}")
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_checkpoint(path: Path, meta: dict) -> dict:
    """The checkpoint at ``path`` (for --resume), checked to be a training checkpoint of the model ``meta``
    describes (its name, classes and kernel sizes)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"--resume: {path}: no checkpoint to resume from") from None
    except Exception as e:
        raise CheckpointError(f"--resume: {path}: unreadable checkpoint ({str(e).splitlines()[0][:120]})") from None
    if not is_training_checkpoint(obj) or "optimizer" not in obj:
        raise CheckpointError(f"--resume: {path}: not a training checkpoint (no model and optimizer state)")
    if obj.get("meta", {}) != meta:
        found = obj.get("meta", {}).get("model", obj.get("meta"))
        raise CheckpointError(f"--resume: {path} is a checkpoint of {found}, not {meta.get('model')}")
    return obj
