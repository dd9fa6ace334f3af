"""Detection and segmentation share the loop's preemption and resume: a real SIGTERM in the middle of an epoch
stops the run with exit code 75 and a mid-epoch checkpoint, and `--resume auto` ends it with the weights of an
uninterrupted run."""

import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from ecanet.cli import main
from ecanet.training.preemption import PREEMPTED_EXIT
from tests.helpers import make_coco, make_segmentation_data, require_extra

pytestmark = pytest.mark.slow


def signal_at(monkeypatch, step_class, at):
    """SIGTERM to this process before training step ``at`` (counted from 1) of ``step_class``."""
    calls = {"n": 0}
    original = step_class.__call__

    def step(self, model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == at:
                os.kill(os.getpid(), signal.SIGTERM)
        return original(self, model, batch)

    monkeypatch.setattr(step_class, "__call__", step)


def stopped_and_resumed(monkeypatch, step_class, argv, full, cut):
    assert main([*argv, "--output", str(full)]) == 0
    with monkeypatch.context() as m:
        signal_at(m, step_class, at=3)  # two steps per epoch: before epoch 1's first step
        assert main([*argv, "--output", str(cut), "--resume", "auto"]) == PREEMPTED_EXIT
    ckpt = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 1)
    assert main([*argv, "--output", str(cut), "--resume", "auto"]) == 0
    a, b = (load_file(d / "final.safetensors") for d in (full, cut))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_segmentation_resumes_mid_epoch_bit_exactly(tmp_path, monkeypatch):
    from ecanet.segmentation.train import SegmentationStep

    images, masks = make_segmentation_data(tmp_path / "train", n=8, seed=0)
    argv = ["segment", "train", "--images", str(images), "--masks", str(masks), "--backbone", "eca_resnet18"]
    argv += ["--image-size", "48", "--batch-size", "4", "--workers", "0", "--lr", "0.01", "--epochs", "2"]
    stopped_and_resumed(monkeypatch, SegmentationStep, argv, tmp_path / "full", tmp_path / "cut")


def test_detection_resumes_mid_epoch_bit_exactly(tmp_path, monkeypatch):
    require_extra("detection")
    from ecanet.detection.train import DetectionStep

    images, ann = make_coco(tmp_path / "coco", n_images=4)
    argv = ["detect", "train", "--model", "faster_rcnn", "--backbone", "eca_resnet18", "--images", str(images)]
    argv += ["--annotations", str(ann), "--epochs", "2", "--batch-size", "2", "--min-size", "64", "--max-size", "64"]
    argv += ["--workers", "0", "--lr", "0.01", "--trainable-layers", "5"]
    stopped_and_resumed(monkeypatch, DetectionStep, argv, tmp_path / "full", tmp_path / "cut")
