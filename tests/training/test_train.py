import importlib.util
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from PIL import Image

from ecanet import create_model, load_checkpoint
from ecanet.classification import evaluate, train
from ecanet.classification.config import RECIPES, resolve
from ecanet.classification.data import ImageFolder, eval_transform
from ecanet.cli import main
from ecanet.training.fit import lr_lambda

RECORD_KEYS = {"epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "img_per_s", "seconds"}
FAST = dict(model="eca_resnet20", image_size=16, batch_size=8, workers=0, lr=0.05, compare=[])


def cfg(data, out, **kw):
    return resolve(**{**FAST, "data": str(data), "output": str(out), **kw})


def test_short_run_lowers_loss_and_writes_every_file(image_data, tmp_path):
    out = tmp_path / "run"
    summary = train(cfg(image_data, out, epochs=4))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert all(RECORD_KEYS <= set(r) for r in records)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    for name in ["checkpoint.pt", "config.json", "curves.png", "summary.json", "best.safetensors", "final.safetensors"]:
        assert (out / name).is_file(), name
    if importlib.util.find_spec("tensorboard") is not None:  # the "tensorboard" extra
        assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    else:  # logged as off, and training went on
        assert not (out / "tensorboard").exists()
    with Image.open(out / "curves.png") as im:
        im.verify()
    saved = json.loads((out / "summary.json").read_text())
    assert {"model", "epochs", "best_top1", "final_top1", "params", "macs", "train_time_s"} <= set(saved)
    assert saved["final_top1"] == pytest.approx(records[-1]["val_top1"]) and summary["model"] == "eca_resnet20"
    assert saved["best_top1"] == pytest.approx(max(r["val_top1"] for r in records))
    model = load_checkpoint(out / "final.safetensors")
    assert model.fc.out_features == 3
    assert json.loads((out / "config.json").read_text())["lr"] == 0.05


def test_evaluate_equals_hand_computation(image_data):
    torch.manual_seed(0)
    model = create_model("eca_resnet20", num_classes=3).eval()
    dataset = ImageFolder(image_data / "val", eval_transform(16))
    result = evaluate(model, dataset, batch_size=5, workers=0, device="cpu")
    xs = torch.stack([dataset[i][0] for i in range(len(dataset))])
    ys = torch.tensor([dataset[i][1] for i in range(len(dataset))])
    with torch.no_grad():
        logits = model(xs)
    assert result["n"] == 12
    assert result["top1"] == pytest.approx(100 * (logits.argmax(1) == ys).float().mean().item())
    top3 = (logits.topk(3, 1).indices == ys[:, None]).any(1).float().mean().item()
    assert result["top5"] == pytest.approx(100 * top3) == 100.0  # top-5 of 3 classes is always a hit
    assert result["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, ys).item(), rel=1e-5)


def _cli_train(data, out, *extra):
    args = ["--model", "eca_resnet20", "--data", str(data), "--output", str(out), "--image-size", "16"]
    args += ["--batch-size", "8", "--workers", "0", "--lr", "0.05", "--compare", "--epochs", "3", *extra]
    return [sys.executable, "-m", "ecanet", "train", *args]


# Runs ``ecanet train`` and kills the process with SIGKILL at a fixed point: after epoch 0's checkpoint is
# written and one optimizer step into epoch 1 (so weights in memory are ahead of the file), whatever the
# machine's speed.
KILLED_MID_EPOCH = """
import os, signal, sys
import ecanet.training.fit as fit

one_epoch = fit.train_one_epoch


def one_step_then_sigkill(loader):
    for i, batch in enumerate(loader):
        if i == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        yield batch


def train_one_epoch(model, loader, *args, **kwargs):
    epoch = args[5]
    return one_epoch(model, one_step_then_sigkill(loader) if epoch == 1 else loader, *args, **kwargs)


fit.train_one_epoch = train_one_epoch
from ecanet.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_and_resume_gives_identical_weights(image_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run(_cli_train(image_data, full), check=True, env=env, capture_output=True)
    cut = tmp_path / "cut"
    argv = _cli_train(image_data, cut)[3:]  # after "python -m ecanet"
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_EPOCH, *argv], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len((cut / "metrics.jsonl").read_text().splitlines()) == 1  # epoch 0 done, epoch 1 cut
    subprocess.run(_cli_train(image_data, cut, "--resume"), check=True, env=env, capture_output=True)
    a = load_checkpoint(full / "final.safetensors").state_dict()
    b = load_checkpoint(cut / "final.safetensors").state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    resumed = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in resumed] == [0, 1, 2]
    for key in ("train_loss", "val_loss", "val_top1", "lr"):  # the same run, timings aside
        assert [r[key] for r in resumed] == [r[key] for r in reference], key


@pytest.mark.slow
def test_ddp_two_processes_matches_one(image_data, tmp_path):
    """Same global batch (2 x 4 vs 1 x 8) and no augmentation; BatchNorm frozen, since per-process batch
    statistics differ from global ones (SyncBatchNorm, which would align them, runs on GPUs only)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--model", "eca_resnet20", "--data", str(image_data), "--image-size", "16", "--workers", "0"]
    common += ["--lr", "0.05", "--compare", "--epochs", "2", "--no-augment", "--freeze-bn", "--device", "cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(
        [sys.executable, "-m", "ecanet", "train", *common, "--batch-size", "8", "--output", str(one)],
        check=True,
        env=env,
        capture_output=True,
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "ecanet",
            "train",
            *common,
            "--batch-size",
            "4",
            "--output",
            str(two),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    a = load_checkpoint(one / "final.safetensors").state_dict()
    b = load_checkpoint(two / "final.safetensors").state_dict()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-3, msg=key)
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert s2["world_size"] == 2 and s1["final_top1"] == pytest.approx(s2["final_top1"])


def test_recipes_and_overrides():
    paper = resolve(recipe="paper")
    assert (paper.optimizer, paper.momentum, paper.weight_decay, paper.epochs) == ("sgd", 0.9, 1e-4, 100)
    assert (paper.schedule, paper.step_size, paper.gamma, paper.image_size) == ("step", 30, 0.1, 224)
    mob = resolve(recipe="paper-mobilenet", epochs=3)
    assert (mob.weight_decay, mob.batch_size, mob.base_lr, mob.gamma, mob.epochs) == (4e-5, 96, 0.045, 0.98, 3)
    modern = RECIPES["modern"]
    assert modern["schedule"] == "cosine" and modern["label_smoothing"] > 0 and modern["ema_decay"] > 0
    with pytest.raises(ValueError, match="--recipe: unknown recipe 'papr'"):
        resolve(recipe="papr")


def test_schedules():
    step = lr_lambda(resolve(recipe="paper"), steps_per_epoch=10)
    assert step(0) == 1.0 and step(299) == 1.0 and step(300) == pytest.approx(0.1) and step(600) == pytest.approx(0.01)
    multi = lr_lambda(resolve(schedule="multistep", milestones=[8, 11], epochs=12), steps_per_epoch=10)
    assert multi(79) == 1.0 and multi(80) == pytest.approx(0.1) and multi(110) == pytest.approx(0.01)
    expo = lr_lambda(resolve(recipe="paper-mobilenet"), steps_per_epoch=10)
    assert expo(25) == pytest.approx(0.98**2)
    cos = lr_lambda(resolve(schedule="cosine", epochs=10, warmup_epochs=2), steps_per_epoch=10)
    assert cos(0) == pytest.approx(0.05) and cos(19) == pytest.approx(1.0) and cos(20) == pytest.approx(1.0)
    assert cos(60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    poly = lr_lambda(resolve(schedule="poly", epochs=30), steps_per_epoch=10)  # the segmentation reference's
    assert poly(0) == 1.0 and poly(150) == pytest.approx(0.5**0.9) and poly(270) == pytest.approx(0.1**0.9)


def test_config_file_reuse(image_data, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["train", *_cli_train(image_data, first)[4:], "--epochs", "1", "--recipe", "modern"]) == 0
    second = tmp_path / "second"
    assert main(["train", "--config", str(first / "config.json"), "--output", str(second), "--epochs", "1"]) == 0
    third = tmp_path / "third"
    assert (
        main(
            [
                "train",
                "--config",
                str(first / "config.json"),
                "--output",
                str(third),
                "--epochs",
                "1",
                "--schedule",
                "multistep",
                "--milestones",
                "1",
                "3",
            ]
        )
        == 0
    )
    assert json.loads((third / "config.json").read_text())["milestones"] == [1, 3]
    c1, c2 = (json.loads((d / "config.json").read_text()) for d in (first, second))
    assert c2.pop("output") != c1.pop("output")
    assert c1 == c2 and c1["recipe"] == "modern" and c1["label_smoothing"] == 0.1


def save_authors_style(model, path):
    torch.save(
        {
            "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
            "arch": "eca_resnet20",
            "epoch": 1,
            "best_prec1": 1.0,
            "optimizer": {},
        },
        path,
    )


def test_fine_tune_from_pretrained_with_new_head_and_frozen_stages(image_data, tmp_path):
    source = create_model("eca_resnet20", num_classes=10)
    with torch.no_grad():
        source.layer1[0].conv1.weight.fill_(0.01)
    weights = tmp_path / "eca_resnet20_k333.pth.tar"
    save_authors_style(source, weights)
    out = tmp_path / "ft"
    train(cfg(image_data, out, epochs=1, pretrained=str(weights), freeze_stages=1))
    tuned = load_checkpoint(out / "final.safetensors")
    assert tuned.fc.out_features == 3  # a new head for the 3 classes of the data
    torch.testing.assert_close(tuned.layer1[0].conv1.weight, source.layer1[0].conv1.weight)  # frozen, copied
    assert not torch.equal(tuned.layer3[0].conv1.weight, source.layer3[0].conv1.weight)  # trained


def test_amp_channels_last_and_ema_take_effect(image_data, tmp_path, monkeypatch):
    """Seen from inside the run: convolutions compute in bfloat16 (CPU autocast) on channels-last inputs,
    and the saved EMA equals the exponential average of the weights after every optimizer step."""
    import importlib

    import ecanet.training.fit as fit

    classification_train = importlib.import_module("ecanet.classification.train")  # the module, not the function

    seen = {"dtype": set(), "channels_last": set()}
    build_model, build_optimizer = classification_train.build_model, fit.build_optimizer

    def watched_model(config, num_classes):
        model = build_model(config, num_classes)

        def hook(module, args, out):
            if module.training:
                seen["dtype"].add(out.dtype)
                seen["channels_last"].add(args[0].is_contiguous(memory_format=torch.channels_last))

        model.layer2[0].conv1.register_forward_hook(hook)
        return model

    trajectory, names = [], []

    def recording_optimizer(config, model):
        optimizer = build_optimizer(config, model)
        names[:] = [n for n, _ in model.named_parameters()]
        optimizer.register_step_post_hook(
            lambda *_: trajectory.append([p.detach().clone() for p in model.parameters()])
        )
        return optimizer

    monkeypatch.setattr(classification_train, "build_model", watched_model)
    monkeypatch.setattr(fit, "build_optimizer", recording_optimizer)
    out = tmp_path / "amp"
    summary = train(cfg(image_data, out, epochs=2, amp=True, channels_last=True, ema_decay=0.9, recipe=None))
    assert summary["final_top1"] is not None
    assert seen == {"dtype": {torch.bfloat16}, "channels_last": {True}}
    ema = torch.load(out / "checkpoint.pt", weights_only=True)["ema"]
    expected = trajectory[0]  # the average starts at the weights after the first step
    for weights in trajectory[1:]:
        expected = [0.9 * e + 0.1 * w for e, w in zip(expected, weights)]
    assert len(trajectory) == 2 * (24 // 8)  # every step of both epochs
    for name, value in zip(names, expected):
        torch.testing.assert_close(ema[f"module.{name}"], value, rtol=1e-5, atol=1e-6)


def test_eval_cli_reports_top1_top5_loss(image_data, tmp_path, capsys):
    out = tmp_path / "run"
    train(cfg(image_data, out, epochs=1))
    assert (
        main(
            [
                "eval",
                "--weights",
                str(out / "final.safetensors"),
                "--data",
                str(image_data),
                "--image-size",
                "16",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"top1", "top5", "loss"} and result["n"] == 12
