"""``ecanet segment`` end to end: train, eval, predict, resume, the VOC layout, instance masks as
foreground, bad input, and DDP evaluation equal to one process's."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ecanet.cli import main
from ecanet.segmentation import load_segmenter
from ecanet.segmentation.data import MEAN, STD
from tests.helpers import make_segmentation_data

COMMON = ["--backbone", "eca_resnet18", "--image-size", "48", "--batch-size", "4", "--workers", "0", "--lr", "0.01"]


@pytest.fixture
def seg_data(tmp_path):
    train = make_segmentation_data(tmp_path / "train", n=8, seed=0)
    val = make_segmentation_data(tmp_path / "val", n=4, seed=1)
    return train, val


def _train(tmp_path, seg_data, out, *extra):
    (images, masks), (val_images, val_masks) = seg_data
    argv = ["segment", "train", "--images", str(images), "--masks", str(masks), "--val-images", str(val_images)]
    argv += ["--val-masks", str(val_masks), "--output", str(out), *COMMON, *extra]
    assert main(argv) == 0


def test_train_eval_predict(tmp_path, seg_data, capsys):
    out = tmp_path / "run"
    _train(tmp_path, seg_data, out, "--epochs", "2")
    summary = json.loads(capsys.readouterr().out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and records[-1]["val_mIoU"] == summary["mIoU"]
    for name in ("best.safetensors", "final.safetensors", "checkpoint.pt", "curves.png", "config.json", "summary.json"):
        assert (out / name).is_file(), name
    assert summary["num_classes"] == 3 and len(summary["iou"]) == 3
    assert json.loads((out / "config.json").read_text())["schedule"] == "poly"
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "deeplabv3 (eca_resnet18)" in page and "val_mIoU" in page and "for a segmenter's backbone" in page
    capsys.readouterr()

    (val_images, val_masks) = seg_data[1]
    argv = ["segment", "eval", "--weights", str(out / "final.safetensors"), "--images", str(val_images)]
    assert main([*argv, "--masks", str(val_masks), "--image-size", "48"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["mIoU"] == pytest.approx(summary["mIoU"]) and metrics["n"] == 4

    image = val_images / "0.png"
    assert (
        main(
            [
                "segment",
                "predict",
                str(image),
                "--weights",
                str(out / "final.safetensors"),
                "--output",
                str(tmp_path / "p"),
                "--image-size",
                "48",
            ]
        )
        == 0
    )
    raw = Image.open(tmp_path / "p" / "0_mask.png")
    assert raw.mode == "P" and raw.size == (64, 48)
    model = load_segmenter(out / "final.safetensors").eval()
    img = TF.to_image(Image.open(image).convert("RGB"))  # the model sees the image resized to 48x48
    x = TF.normalize(TF.to_dtype(TF.resize(img, [48, 48]), torch.float32, scale=True), MEAN, STD)
    with torch.no_grad():
        logits = torch.nn.functional.interpolate(model(x[None])["out"], size=(48, 64), mode="bilinear")
    assert np.array_equal(np.array(raw), logits.argmax(1)[0].numpy().astype(np.uint8))
    overlay = Image.open(tmp_path / "p" / "0_overlay.png")
    assert overlay.size == (64, 48) and overlay.mode == "RGB"


@pytest.mark.slow
def test_resume_continues(tmp_path, seg_data):
    out = tmp_path / "run"
    _train(tmp_path, seg_data, out, "--epochs", "1", "--amp")  # bf16 autocast on the CPU
    _train(tmp_path, seg_data, out, "--epochs", "2", "--amp", "--resume")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]


def _voc(root, ids_train=("a", "b", "c", "d"), ids_val=("e", "f")):
    images, masks = make_segmentation_data(root / "gen", n=len(ids_train) + len(ids_val))
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for i, name in enumerate(ids_train + ids_val):
        Image.open(images / f"{i}.png").convert("RGB").save(root / "JPEGImages" / f"{name}.jpg")
        (masks / f"{i}.png").rename(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids_train) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids_val) + "\n")
    return root


def test_voc_layout(tmp_path, capsys):
    voc = _voc(tmp_path / "VOC2012")
    assert (
        main(["segment", "train", "--voc", str(voc), "--epochs", "1", "--output", str(tmp_path / "run"), *COMMON]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_classes"] == 21 and len(summary["iou"]) == 21
    assert summary["iou"][5] is None  # a class in neither masks nor predictions has no IoU


def test_instance_masks_as_foreground(tmp_path, capsys):
    images, _ = make_segmentation_data(tmp_path / "d", n=4)
    inst = tmp_path / "instances"
    inst.mkdir()
    for i in range(4):
        labels = np.zeros((48, 64), np.uint8)
        labels[4:20, 4:20], labels[24:40, 30:50] = 1, 2
        Image.fromarray(labels).save(inst / f"{i}_mask.png")
    argv = ["segment", "train", "--images", str(images), "--masks", str(inst), "--masks-as", "foreground"]
    assert main([*argv, "--epochs", "1", "--output", str(tmp_path / "run"), *COMMON]) == 0
    assert json.loads(capsys.readouterr().out)["num_classes"] == 2


def _bad(tmp_path):
    """Folders with one defect each, all else sound."""
    cases = {}
    for name in ("size", "values", "no_mask", "no_image", "voc"):
        cases[name] = make_segmentation_data(tmp_path / name, n=3)
    images, masks = cases["size"]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "1.png")
    images, masks = cases["values"]
    Image.fromarray(np.full((48, 64), 7, np.uint8)).save(masks / "2.png")
    (cases["no_mask"][1] / "0.png").unlink()
    (cases["no_mask"][1] / "1.png").unlink()
    (cases["no_image"][0] / "2.png").unlink()
    voc = _voc(tmp_path / "VOC")
    (voc / "JPEGImages" / "b.jpg").unlink()
    cases["voc"] = voc
    return cases


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    cases = _bad(tmp_path)
    out = tmp_path / "out"

    def run(*argv):
        code = main(["segment", "train", *COMMON, *argv, "--output", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("ecanet segment: error: "), err
        assert not out.exists()
        return err[0]

    def folders(name):
        images, masks = cases[name]
        return "--images", str(images), "--masks", str(masks)

    assert "1.png: mask is 10x10, its image 1.png is 64x48" in run(*folders("size"))
    msg = run(*folders("values"), "--num-classes", "3")
    assert "2.png: values [7] are not class indices 0..2 (--num-classes) nor the ignore index 255" in msg
    msg = run(*folders("no_mask"))
    assert "2 images in" in msg and "have no mask" in msg and "0.png, 1.png" in msg
    assert "1 masks in" in run(*folders("no_image")) and "have no image" in run(*folders("no_image"))
    assert "train.txt lists 'b', but" in run("--voc", str(cases["voc"])) and "b.jpg does not exist" in run(
        "--voc", str(cases["voc"])
    )
    assert "unknown model 'eca_resnet51'; did you mean" in run(*folders("size"), "--backbone", "eca_resnet51")
    assert "--model: unknown segmenter 'pspnet'" in run(*folders("size"), "--model", "pspnet")
    assert "--images is required (or --voc DIR)" in run()


@pytest.mark.slow
def test_ddp_evaluation_equals_one_process(tmp_path, seg_data):
    """Two processes train (DDP, gloo), then evaluate sharded; the summed confusion matrix gives exactly
    the metrics of one process."""
    (images, masks), (val_images, val_masks) = seg_data
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ecanet"]
    out = tmp_path / "ddp"
    train = ["segment", "train", "--images", str(images), "--masks", str(masks), "--epochs", "1", "--output", str(out)]
    done = subprocess.run(
        [*torchrun, *train, *COMMON, "--batch-size", "2", "--device", "cpu"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
    evaluate = ["segment", "eval", "--weights", str(out / "final.safetensors"), "--images", str(val_images)]
    evaluate += ["--masks", str(val_masks), "--image-size", "48", "--batch-size", "1", "--device", "cpu"]
    one = subprocess.run(
        [sys.executable, "-m", "ecanet", *evaluate], env=env, capture_output=True, text=True, check=True
    )
    two = subprocess.run([*torchrun, *evaluate], env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert a["n"] == b["n"] == 4
    for key in ("mIoU", "mDice", "pixel_acc", "iou"):
        assert a[key] == pytest.approx(b[key], abs=1e-9), key


@pytest.mark.slow
def test_every_segment_flag(tmp_path, capsys):
    """--backbone-weights (with lr 0 the backbone's convolutions stay the file's), --no-aux-loss,
    --output-stride, --loss, --ignore-index, --config; eval on a VOC split."""
    from ecanet import create_model, load_checkpoint, save_weights

    torch.manual_seed(5)
    save_weights(create_model("eca_resnet18"), tmp_path / "b.safetensors")
    images, masks = make_segmentation_data(tmp_path / "d", n=4)
    for path in masks.iterdir():  # the ignored pixels marked 7 instead of 255
        labels = np.array(Image.open(path))
        Image.fromarray(np.where(labels == 255, 7, labels).astype(np.uint8)).save(path)
    out = tmp_path / "run"
    argv = ["segment", "train", *COMMON[:-2], "--images", str(images), "--masks", str(masks), "--output", str(out)]
    argv += ["--epochs", "1", "--base-lr", "0", "--backbone-weights", str(tmp_path / "b.safetensors")]
    argv += ["--no-aux-loss", "--output-stride", "16", "--loss", "ce+dice", "--ignore-index", "7", "--num-classes", "3"]
    assert main(argv) == 0
    capsys.readouterr()
    model = load_segmenter(out / "final.safetensors")
    assert model.config["aux_loss"] is False and model.aux_classifier is None and model.config["output_stride"] == 16
    file = load_checkpoint(tmp_path / "b.safetensors").state_dict()
    convs = {k: v for k, v in model.backbone.state_dict().items() if k.endswith("conv1.weight") or ".eca." in k}
    assert convs and all(torch.equal(v, file[k]) for k, v in convs.items())
    saved = json.loads((out / "config.json").read_text())
    assert (saved["ignore_index"], saved["loss"], saved["lr"]) == (7, "ce+dice", 0.0)

    again = tmp_path / "again"
    assert main(["segment", "train", "--config", str(out / "config.json"), "--output", str(again)]) == 0
    capsys.readouterr()
    assert json.loads((again / "config.json").read_text()) == {**saved, "output": str(again)}

    voc = _voc(tmp_path / "VOC")
    argv = ["segment", "eval", "--weights", str(out / "final.safetensors"), "--voc", str(voc), "--split", "train"]
    assert main([*argv, "--image-size", "48", "--batch-size", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4
