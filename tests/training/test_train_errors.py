import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ecanet.classification import ClassificationStep, train
from ecanet.classification.config import resolve
from ecanet.classification.data import ImageFolder, eval_transform
from ecanet.cli import main
from ecanet.errors import DataError
from ecanet.training.engine import TrainingError
from ecanet.weights import CheckpointError

FAST = dict(model="eca_resnet20", image_size=16, batch_size=8, workers=0, lr=0.05, compare=[], epochs=1)


def cfg(data, out, **kw):
    return resolve(**{**FAST, "data": str(data), "output": str(out), **kw})


def test_missing_and_empty_data_folders(tmp_path):
    with pytest.raises(DataError, match=r"--data: .*nowhere is not a folder"):
        train(cfg(tmp_path / "nowhere", tmp_path / "o"))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    with pytest.raises(DataError, match=r"--train-dir: .*empty/train: Couldn't find any class folder"):
        train(cfg(tmp_path / "empty", tmp_path / "o"))


def test_class_folders_differ(image_data, tmp_path):
    shutil.move(image_data / "val" / "blue", image_data / "val" / "purple")
    with pytest.raises(DataError, match=r"class folders differ .*only in train \['blue'\], only in val \['purple'\]"):
        train(cfg(image_data, tmp_path / "o"))


def test_unreadable_images_are_skipped_and_counted(image_data, tmp_path):
    (image_data / "train" / "red" / "zero.png").write_bytes(b"")
    good = (image_data / "train" / "green" / "0.png").read_bytes()
    (image_data / "train" / "green" / "truncated.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "o"
    train(cfg(image_data, out, batch_size=4, augment=False))
    record = json.loads((out / "metrics.jsonl").read_text())
    # drop_last may leave a skipped file unseen; shuffling is seeded, so the count is fixed for this data
    assert record["skipped_images"] >= 1


def test_other_image_modes_become_rgb(tmp_path):
    root = tmp_path / "modes" / "a"
    root.mkdir(parents=True)
    arr = np.random.default_rng(0).integers(0, 255, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(arr).convert("L").save(root / "gray.png")
    Image.fromarray(arr).convert("CMYK").save(root / "cmyk.jpg")
    pal = Image.fromarray(arr).convert("P")
    pal.info["transparency"] = 0
    pal.save(root / "palette.png", transparency=0)
    Image.fromarray(arr).convert("RGBA").save(root / "rgba.png")
    Image.fromarray(arr[..., 0].astype(np.uint16) * 200).save(root / "gray16.png")
    ds = ImageFolder(tmp_path / "modes", eval_transform(16))
    assert len(ds) == 5
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 16, 16) and y == 0


def test_resume_with_nothing_to_resume(image_data, tmp_path):
    with pytest.raises(TrainingError, match=r"--resume: .*checkpoint\.pt: no checkpoint to resume from"):
        train(cfg(image_data, tmp_path / "fresh", resume=""))


def test_resume_checkpoint_of_another_model(image_data, tmp_path):
    out = tmp_path / "o"
    train(cfg(image_data, out))
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is a checkpoint of eca_resnet20, not resnet20"):
        train(cfg(image_data, out, model="resnet20", resume="", epochs=2))


def test_batch_larger_than_dataset(image_data, tmp_path):
    with pytest.raises(
        DataError, match=r"--batch-size 64 x 1 process\(es\) is larger than the training set \(24 images"
    ):
        train(cfg(image_data, tmp_path / "o", batch_size=64))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(image_data, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = ClassificationStep.__call__

    def poisoned(self, model, batch):
        loss, counts = original(self, model, batch)
        calls["n"] += model.training
        return (loss * float("nan") if calls["n"] > 3 else loss), counts  # 3 training steps per epoch

    monkeypatch.setattr(ClassificationStep, "__call__", poisoned)
    out = tmp_path / "o"
    with pytest.raises(
        TrainingError, match=r"non-finite loss at epoch 1, step 0; samples \d+ \((.*\.png)\), (\d+, ){6}\d+$"
    ) as e:
        train(cfg(image_data, out, epochs=3))
    first_file = str(e.value).split("(")[1].split(")")[0]
    assert first_file.startswith(str(image_data / "train"))  # the batch's first sample, to be checked
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_cli_errors_are_one_line(image_data, tmp_path, capsys):
    assert main(["train", "--model", "eca_resnet2", "--data", str(image_data), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown model 'eca_resnet2'; did you mean" in err and len(err.splitlines()) == 1
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "--config: " in capsys.readouterr().err
    assert main(["eval", "--weights", str(tmp_path / "nope.pt"), "--data", str(image_data)]) == 2
    assert "nope.pt: no such checkpoint file" in capsys.readouterr().err


def test_sync_bn_needs_cuda(image_data, tmp_path):
    with pytest.raises(ValueError, match="--sync-bn needs CUDA"):
        train(cfg(image_data, tmp_path / "o", sync_bn=True, device="cpu"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--eca-k", "3", "five"], "--eca-k: expected 'released', 'adaptive' or odd ints, got 3 five"),
        (["--optimizer", "lion"], "--optimizer: unknown optimizer 'lion'"),
        (["--schedule", "linear"], "--schedule: unknown schedule 'linear'"),
        (["--recipe", "papr"], "--recipe: unknown recipe 'papr'"),
        (["--accumulate-steps", "0"], "--accumulate-steps: expected an integer >= 1, got 0"),
        (["--clip-grad", "0"], "--clip-grad: expected a norm > 0, got 0.0"),
        (["--device", "cuda"], "--device cuda: CUDA is not available on this machine"),
    ],
)
def test_bad_training_flags(image_data, tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # --device cuda on a machine without one
    args = ["train", "--data", str(image_data), "--output", str(tmp_path / "o"), "--image-size", "16"]
    assert main(args + ["--batch-size", "8", "--workers", "0", "--compare", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing written
