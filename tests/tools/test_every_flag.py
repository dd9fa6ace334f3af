"""Every command-line flag that no other test reaches, run once end to end on tiny data, with its effect
checked (not only that the command ran)."""

import importlib
import json
from dataclasses import replace

import pytest
import torch

from ecanet import create_model, load_checkpoint, save_weights
from ecanet.classification.config import resolve
from ecanet.cli import main
from ecanet.training.fit import scaled_lr
from tests.helpers import COLORS, make_image_folder, require_extra

pytestmark = pytest.mark.slow
TINY = ["--image-size", "16", "--batch-size", "8", "--workers", "0"]


def train_cli(data, out, *extra) -> int:
    return main(["train", "--model", "eca_resnet20", "--data", str(data), "--output", str(out), *TINY, *extra])


def test_train_with_no_data_is_the_embedded_comparison(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "1"]) == 0  # the README's first command, one epoch
    printed = capsys.readouterr().out
    assert "embedded digits" in printed
    for model in ("eca_resnet20", "resnet20", "se_resnet20"):
        assert model in printed
    rows = json.loads((tmp_path / "runs/ecanet/comparison.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["eca_resnet20", "resnet20", "se_resnet20"]
    assert (tmp_path / "runs/ecanet/compare/se_resnet20/final.safetensors").is_file()


def test_compare_train_and_val_dirs_optimizer_nesterov(image_data, tmp_path):
    out = tmp_path / "run"
    argv = ["--epochs", "1", "--compare", "resnet20", "--optimizer", "adamw"]
    assert (
        main(
            [
                "train",
                "--model",
                "eca_resnet20",
                "--train-dir",
                str(image_data / "train"),
                "--val-dir",
                str(image_data / "val"),
                "--output",
                str(out),
                *TINY,
                *argv,
            ]
        )
        == 0
    )
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["eca_resnet20", "resnet20"]
    assert json.loads((out / "summary.json").read_text())["data"] == str(image_data / "train")
    state = torch.load(out / "checkpoint.pt", weights_only=True)["optimizer"]["state"]
    assert "exp_avg_sq" in next(iter(state.values()))  # AdamW's second moment
    out = tmp_path / "nesterov"
    assert train_cli(image_data, out, "--epochs", "1", "--compare", "--nesterov") == 0
    groups = torch.load(out / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]
    assert groups[0]["nesterov"] is True and "momentum_buffer" in str(
        torch.load(out / "checkpoint.pt", weights_only=True)["optimizer"]["state"]
    )


def test_resume_from_a_path_continues_that_run_elsewhere(image_data, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert train_cli(image_data, first, "--epochs", "1", "--compare") == 0
    assert train_cli(image_data, second, "--epochs", "2", "--compare", "--resume", str(first / "checkpoint.pt")) == 0
    records = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]  # epoch 0 came from the file


def test_linear_scaling_rule(image_data, tmp_path):
    cfg = resolve(batch_size=32, base_lr=0.1, base_batch=256)
    assert scaled_lr(cfg, 1) == pytest.approx(0.0125) and scaled_lr(cfg, 2) == pytest.approx(0.025)
    assert scaled_lr(replace(cfg, lr=0.3), 2) == 0.3  # an absolute --lr wins
    out = tmp_path / "run"
    assert main(["train", "--data", str(image_data), "--output", str(out), *TINY, "--epochs", "1", "--compare"]) == 0
    assert json.loads((out / "config.json").read_text())["lr"] == pytest.approx(0.1 * 8 / 256)


def test_compile_flag_compiles_the_model(image_data, tmp_path, monkeypatch):
    compiled = []
    real = torch.compile

    def recording(model, *args, **kwargs):
        compiled.append(type(model).__name__)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", recording)
    assert train_cli(image_data, tmp_path / "run", "--epochs", "1", "--compare", "--compile") == 0
    assert compiled == ["ResNet"]


def test_eval_with_model_num_classes_and_val_dir(trained_run, image_data, capsys):
    from ecanet.classification import evaluate

    capsys.readouterr()
    argv = ["eval", "--weights", str(trained_run / "final.safetensors"), "--model", "eca_resnet20"]
    argv += ["--num-classes", "3", "--val-dir", str(image_data / "val"), "--image-size", "16", "--workers", "0"]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    expected = evaluate(load_checkpoint(trained_run / "final.safetensors"), image_data / "val", 16, workers=0)
    assert got == expected and got["n"] == 12


def test_bench_reference_dtype_channels_last_and_compile(tmp_path, monkeypatch, capsys):
    require_extra("timm")
    bench = importlib.import_module("ecanet.studies.bench")
    seen = {}
    build = bench.build

    def watched(spec, *args, **kwargs):
        model = build(spec, *args, **kwargs)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 3)

        def hook(module, inputs, out):
            if out.shape[0] == 2:  # the timed batches (the complexity count runs one image, untimed)
                seen.setdefault(spec, set()).add(
                    (out.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last))
                )

        conv.register_forward_hook(hook)
        return model

    monkeypatch.setattr(bench, "build", watched)
    common = ["--image-size", "32", "--batch-size", "2", "--repeats", "1", "--warmup", "0", "--no-memory"]
    out = tmp_path / "rows.json"
    argv = ["bench", "--models", "resnet18", "--include-reference", "--dtype", "bfloat16", "--channels-last"]
    assert main([*argv, *common, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["resnet18", "eca_resnet50:plain", "timm:eca_resnet50"]
    assert {s: seen[s] for s in ("resnet18", "eca_resnet50:plain")} == dict.fromkeys(
        ("resnet18", "eca_resnet50:plain"), {(torch.bfloat16, True)}
    )
    assert "bfloat16, channels_last" in capsys.readouterr().out
    compiled = []
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, *a, **k: compiled.append(m) or real(m, *a, **k))
    assert main(["bench", "--models", "resnet20", "--compile", *common]) == 0
    assert len(compiled) == 1


def test_viz_attention_for_se_and_cbam_models(image_data, tmp_path):
    from PIL import Image

    image = sorted((image_data / "val" / "red").glob("*.png"))[0]
    for attn in ("se", "cbam"):
        torch.manual_seed(0)
        weights = save_weights(create_model(f"{attn}_resnet20", num_classes=3), tmp_path / f"{attn}.safetensors")
        out = tmp_path / attn
        argv = ["viz", "attention", str(image), "--weights", str(weights), "--output", str(out), "--image-size", "16"]
        assert main(argv) == 0
        with Image.open(out / "attention_0.png") as im:
            assert im.size == (1000, int(100 * (0.3 * 9 + 1.0)))  # one strip per attention layer: 9


def test_export_model_flag_and_tolerance(tmp_path, capsys):
    require_extra("export")
    torch.manual_seed(0)
    weights = save_weights(create_model("eca_resnet20", num_classes=3), tmp_path / "w.safetensors")
    base = ["export", "--weights", str(weights), "--model", "eca_resnet20", "--format", "onnx", "--image-size", "16"]
    assert main([*base, "--output", str(tmp_path / "ok.onnx"), "--tolerance", "1e-3"]) == 0
    assert main([*base, "--output", str(tmp_path / "strict.onnx"), "--tolerance", "0"]) == 2
    assert "differs from PyTorch by" in capsys.readouterr().err and not (tmp_path / "strict.onnx").exists()
    assert main([*base[:3], "--model", "resnet20", *base[5:], "--output", str(tmp_path / "x.onnx")]) == 2
    assert "holds eca_resnet20, not resnet20" in capsys.readouterr().err


def test_detect_retinanet_backbone_weights_and_resume(tmp_path):
    require_extra("detection")
    from tests.helpers import make_coco

    images, ann = make_coco(tmp_path / "coco")
    torch.manual_seed(0)
    backbone = create_model("eca_resnet18")
    weights = save_weights(backbone, tmp_path / "backbone.safetensors")
    out = tmp_path / "run"
    argv = ["detect", "train", "--model", "retinanet", "--backbone", "eca_resnet18", "--backbone-weights", str(weights)]
    argv += ["--images", str(images), "--annotations", str(ann), "--batch-size", "2", "--min-size", "64"]
    argv += ["--max-size", "64", "--workers", "0", "--lr", "0.001", "--output", str(out), "--trainable-layers", "0"]
    assert main([*argv, "--epochs", "1"]) == 0
    detector = load_checkpoint_detector(out / "final.safetensors")
    assert type(detector).__name__ == "RetinaNet"
    body = detector.backbone.body
    torch.testing.assert_close(body.layer2[0].eca.conv.weight, backbone.layer2[0].eca.conv.weight)  # frozen, copied
    torch.testing.assert_close(body.layer4[1].conv2.weight, backbone.layer4[1].conv2.weight)
    assert main([*argv, "--epochs", "2", "--resume"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]


def load_checkpoint_detector(path):
    from ecanet.detection.models import load_detector

    return load_detector(path)


def test_train_dir_and_val_dir_may_live_anywhere(tmp_path):
    train_dir = make_image_folder(tmp_path / "a" / "mine", {c: 8 for c in COLORS})
    val_dir = make_image_folder(tmp_path / "b" / "held", {c: 4 for c in COLORS}, seed=1)
    out = tmp_path / "run"
    argv = ["train", "--train-dir", str(train_dir), "--val-dir", str(val_dir), "--output", str(out), *TINY]
    assert main([*argv, "--epochs", "1", "--compare"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"] == str(train_dir) and summary["num_classes"] == 3
