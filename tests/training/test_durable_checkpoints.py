"""Checkpoints survive the cluster: a write that fails (a full disk) leaves the last good file, the last two
checkpoints are kept with their SHA-256, a corrupt latest one is named and skipped by ``--resume auto``, and
``--resume auto`` starts fresh where there is nothing to resume."""

import errno
import json
import logging

import pytest
import torch

from ecanet import save_weights
from ecanet.classification import train
from ecanet.classification.config import resolve
from ecanet.errors import CheckpointError, TrainingError
from ecanet.models import create_model
from ecanet.training.checkpoint import (
    KEYS,
    digest_path,
    load_training_checkpoint,
    previous,
    resume_checkpoint,
    save_training_checkpoint,
)

FAST = dict(model="eca_resnet20", image_size=16, batch_size=8, workers=0, lr=0.05, compare=[], epochs=1)
META = {"model": "x"}


def state(epoch):
    return {k: None for k in KEYS} | {"model": {"w": torch.full((3,), float(epoch))}, "meta": META,
                                       "optimizer": {}, "epoch": epoch}  # fmt: skip


def full_disk_after(nbytes):
    """A ``torch.save`` that writes ``nbytes`` of the file, then fails as a full disk does."""

    def save(obj, f):
        with open(f, "wb") as out:
            out.write(b"\0" * nbytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_a_full_disk_leaves_the_last_checkpoint_and_says_so_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_training_checkpoint(path, **state(0))
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", full_disk_after(100))
    with pytest.raises(TrainingError) as e:
        save_training_checkpoint(path, **state(1))
    assert str(e.value) == f"{path}: could not be written (No space left on device); the previous file is unchanged"
    assert path.read_bytes() == before and not previous(path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.sha256"]  # no half file
    assert load_training_checkpoint(path, META)["epoch"] == 0


def test_a_full_disk_while_saving_weights_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "final.safetensors"
    model = create_model("eca_resnet20")
    save_weights(model, path)
    before = path.read_bytes()

    def full(state, filename, metadata=None):
        open(filename, "wb").write(b"\0" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ecanet.weights.save_file", full)
    with pytest.raises(TrainingError, match=r"final\.safetensors: could not be written \(No space left on device\)"):
        save_weights(model, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["final.safetensors"]


def test_the_last_two_checkpoints_are_kept_with_their_digests(tmp_path):
    path = tmp_path / "checkpoint.pt"
    for epoch in range(3):
        save_training_checkpoint(path, **state(epoch))
    assert load_training_checkpoint(path, META)["epoch"] == 2
    assert load_training_checkpoint(previous(path), META)["epoch"] == 1
    assert digest_path(path).is_file() and digest_path(previous(path)).is_file()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_latest_checkpoint_is_named_and_auto_falls_back(tmp_path, caplog, damage):
    path = tmp_path / "checkpoint.pt"
    save_training_checkpoint(path, **state(0))
    save_training_checkpoint(path, **state(1))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"^--resume: {path}: corrupt checkpoint \(its SHA-256 differs"):
        load_training_checkpoint(path, META)
    with caplog.at_level(logging.INFO, logger="ecanet"):
        ckpt = resume_checkpoint("auto", tmp_path, META)
    assert ckpt["epoch"] == 0
    assert "corrupt checkpoint" in caplog.text and f"resuming from {previous(path)} instead" in caplog.text


def test_auto_with_only_a_corrupt_checkpoint_is_an_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_training_checkpoint(path, **state(0))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        resume_checkpoint("auto", tmp_path, META)


def test_resume_auto_starts_fresh_then_resumes(image_data, tmp_path, caplog):
    """One command line for every start: the first run starts fresh (said in the log), a later one with more
    epochs continues from the checkpoint and ends as one run of those epochs does (a constant schedule, which
    the epoch count does not change)."""
    out = tmp_path / "auto"
    settings = dict(FAST, data=str(image_data), output=str(out), resume="auto", schedule="constant")
    with caplog.at_level(logging.INFO, logger="ecanet"):
        train(resolve(**settings))
        assert f"--resume auto: no checkpoint in {out}: starting fresh" in caplog.text
        train(resolve(**{**settings, "epochs": 2}))
        assert f"--resume auto: resuming from {out / 'checkpoint.pt'} (epoch 0 done)" in caplog.text
    once = tmp_path / "once"
    train(resolve(**{**settings, "output": str(once), "resume": None, "epochs": 2}))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (once / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for key in ("train_loss", "val_loss", "val_top1", "lr"):
        assert [r[key] for r in records] == [r[key] for r in reference], key
