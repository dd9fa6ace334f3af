"""Checkpoint files: the training checkpoint's format (written and read here only), every RNG's state, and
durable writes, which ``save_weights`` uses too: a temporary file flushed to disk, then a rename, then the
folder flushed, so neither a crash nor a full disk leaves a truncated file in place of the last good one.
A training checkpoint keeps its predecessor (``checkpoint.prev.pt``) and a SHA-256 beside it that a resume
verifies. Files are read with weights-only loading."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, TrainingError

# What a training checkpoint holds; "model" and "meta" also make it readable by ``read_weights``.
# "step" is None for an epoch's end, else the micro-batches of ``epoch`` done (a mid-epoch checkpoint, whose
# "epoch_state" holds that epoch's learning rate and every process's sums so far).
KEYS = (
    "model", "meta", "optimizer", "scheduler", "scaler", "ema", "epoch", "step", "epoch_state", "best_score", "rng",
    "config",
)  # fmt: skip


log = logging.getLogger("ecanet")


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot flush a folder; the file itself was flushed
        if not directory:
            raise
    finally:
        os.close(fd)


def write_durably(tmp: Path, write: Callable[[Path], object], target: Path) -> None:
    """``write(tmp)`` and flush it to disk. A failed write (a full disk, say) removes the partial file and
    raises one line naming ``target``, which stays as it was."""
    try:
        write(tmp)
        _fsync(tmp)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        reason = e.strerror or str(e) or type(e).__name__
        raise TrainingError(f"{target}: could not be written ({reason}); the previous file is unchanged") from None


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)``, flushed to disk, then renamed to ``path`` and the folder flushed (``write_durably``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write_durably(tmp, write, path)
    os.replace(tmp, path)
    _fsync(path.parent, directory=True)
    return path


def previous(path: Path) -> Path:
    """Where a training checkpoint's predecessor is kept: checkpoint.pt -> checkpoint.prev.pt."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    """Write a training checkpoint with exactly the fields of ``KEYS``, durably, with its SHA-256 beside it;
    the checkpoint it replaces becomes ``previous(path)``."""
    if set(state) != set(KEYS):
        raise ValueError(f"training checkpoint fields: expected {sorted(KEYS)}, got {sorted(state)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write_durably(tmp, lambda t: torch.save(state, t), path)
    digest = sha256(tmp)
    if path.is_file():  # keep the last two: a corrupt latest still leaves one to resume from
        if digest_path(path).is_file():
            os.replace(digest_path(path), digest_path(previous(path)))
        os.replace(path, previous(path))
    atomic_write(digest_path(path), lambda t: Path(t).write_text(digest + "\n"))
    os.replace(tmp, path)
    _fsync(path.parent, directory=True)
    return path


def load_training_checkpoint(path: Path, meta: dict) -> dict:
    """The checkpoint at ``path`` (for --resume), checked to be a training checkpoint of the model ``meta``
    describes (its name, classes and kernel sizes) and, where its SHA-256 was written beside it, to match it."""
    path = Path(path)
    if path.is_file() and digest_path(path).is_file():
        expected = digest_path(path).read_text().strip()
        if sha256(path) != expected:
            raise CheckpointError(
                f"--resume: {path}: corrupt checkpoint (its SHA-256 differs from {digest_path(path).name})"
            )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"--resume: {path}: no checkpoint to resume from") from None
    except Exception as e:
        raise CheckpointError(f"--resume: {path}: unreadable checkpoint ({str(e).splitlines()[0][:120]})") from None
    if not is_training_checkpoint(obj) or "optimizer" not in obj:
        raise CheckpointError(f"--resume: {path}: not a training checkpoint (no model and optimizer state)")
    recorded = ("classes", "image_size")  # what a run records beside the architecture (older files lack it)
    if {k: v for k, v in obj.get("meta", {}).items() if k not in recorded} != {
        k: v for k, v in meta.items() if k not in recorded
    }:
        found = obj.get("meta", {}).get("model", obj.get("meta"))
        raise CheckpointError(f"--resume: {path} is a checkpoint of {found}, not {meta.get('model')}")
    return obj


def resume_checkpoint(resume: str, out: Path, meta: dict) -> dict | None:
    """The checkpoint ``--resume`` names: a path; "" for OUT/checkpoint.pt; or "auto": OUT/checkpoint.pt, or
    its predecessor where the latest is unreadable or corrupt (said in the log), or None (start fresh, said
    in the log) where OUT holds neither, so one command line serves the first start and every restart."""
    if resume != "auto":
        return load_training_checkpoint(Path(resume) if resume else out / "checkpoint.pt", meta)
    latest = out / "checkpoint.pt"
    found = [p for p in (latest, previous(latest)) if p.is_file()]
    if not found:
        log.info("--resume auto: no checkpoint in %s: starting fresh", out)
        return None
    for path in found:
        try:
            ckpt = load_training_checkpoint(path, meta)
        except CheckpointError as e:
            if path == found[-1]:
                raise
            log.warning("%s; resuming from %s instead", e, found[-1])
            continue
        where = (
            f"epoch {ckpt['epoch']} done" if ckpt.get("step") is None else f"epoch {ckpt['epoch']}, step {ckpt['step']}"
        )
        log.info("--resume auto: resuming from %s (%s)", path, where)
        return ckpt
    raise AssertionError("unreachable")  # the last candidate returns or raises
