"""``ecanet prune`` end to end on generated images: the numbers it reports are those of the files it writes,
the pruned file works with eval, train --pretrained, export, bench and info; bad input is one line."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ecanet import complexity, load_checkpoint
from ecanet.cli import main
from ecanet.models.widths import layer_widths
from tests.helpers import COLORS, make_image_folder, require_extra

require_extra("prune")

COMMON = ["--image-size", "16", "--batch-size", "8", "--workers", "0"]


@pytest.fixture
def pruned_run(trained_run, image_data, tmp_path):
    out = tmp_path / "pruned"
    argv = ["prune", "--weights", str(trained_run / "final.safetensors"), "--data", str(image_data), *COMMON]
    argv += ["--ratio", "0.5", "--compensate", "--finetune-epochs", "1", "--lr", "0.01", "--output", str(out)]
    assert main(argv) == 0
    return out


def evaluate_cli(capsys, weights, data) -> dict:
    capsys.readouterr()
    assert main(["eval", "--weights", str(weights), "--data", str(data), *COMMON]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_prune_writes_what_it_reports(pruned_run, trained_run, image_data, capsys):
    summary = json.loads((pruned_run / "summary.json").read_text())
    (row,) = summary["rows"]
    assert row["importance"] == "eca" and row["speed_up"] > 1.5
    # the accuracies are those of the files: the original weights, and the written pruned (compensated) ones
    assert summary["top1_before"] == pytest.approx(
        evaluate_cli(capsys, trained_run / "final.safetensors", image_data)["top1"]
    )
    pruned_file = pruned_run / "pruned.safetensors"
    assert row["top1_compensated"] == pytest.approx(evaluate_cli(capsys, pruned_file, image_data)["top1"])
    model = load_checkpoint(pruned_file)
    assert complexity(model, (3, 16, 16))["params"] == row["params"] < row["params_before"]
    report = json.loads((pruned_run / "report.json").read_text())
    assert report["compensation"] and all(r["error_after"] <= r["error_before"] for r in report["compensation"])
    finetune = json.loads((pruned_run / "finetune" / "summary.json").read_text())
    assert row["top1_finetuned"] == finetune["final_top1"]
    tuned = load_checkpoint(pruned_run / "finetune" / "final.safetensors")
    assert layer_widths(tuned) == layer_widths(model)  # fine-tuned at the pruned widths
    assert row["img_per_s_before"] > 0 and row["img_per_s_after"] > 0
    config = json.loads((pruned_run / "config.json").read_text())
    assert config["ratio"] == 0.5 and config["importance"] == "eca" and config["model"] == "eca_resnet20"
    # the saved config reproduces the pruned (and compensated) network exactly
    again = pruned_run.parent / "again"
    argv = ["prune", "--config", str(pruned_run / "config.json"), "--finetune-epochs", "0", "--output", str(again)]
    assert main(argv) == 0
    first, second = (
        load_checkpoint(pruned_file).state_dict(),
        load_checkpoint(again / "pruned.safetensors").state_dict(),
    )
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_pruned_file_serves_train_export_bench_and_info(pruned_run, image_data, tmp_path, capsys):
    pruned_file = pruned_run / "pruned.safetensors"
    model = load_checkpoint(pruned_file).eval()
    out = tmp_path / "again"
    argv = ["train", "--pretrained", str(pruned_file), "--model", "eca_resnet20", "--data", str(image_data)]
    assert main([*argv, *COMMON, "--epochs", "1", "--output", str(out), "--compare"]) == 0
    assert layer_widths(load_checkpoint(out / "final.safetensors")) == layer_widths(model)

    require_extra("export")
    import onnxruntime as ort

    onnx_file = tmp_path / "pruned.onnx"
    argv = [
        "export",
        "--weights",
        str(pruned_file),
        "--format",
        "onnx",
        "--output",
        str(onnx_file),
        "--image-size",
        "16",
    ]
    assert main(argv) == 0
    x = torch.randn(2, 3, 16, 16)
    session = ort.InferenceSession(str(onnx_file))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)

    capsys.readouterr()
    argv = ["bench", "--models", "eca_resnet20", str(pruned_file), "--image-size", "16", "--batch-size", "4"]
    assert main([*argv, "--repeats", "1", "--warmup", "0", "--no-memory"]) == 0
    assert str(pruned_file) in capsys.readouterr().out
    assert main(["info", str(pruned_file), "--json"]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert info["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_compiled_pruned_model_equals_eager(pruned_run):
    model = load_checkpoint(pruned_run / "pruned.safetensors").eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compare_criteria_writes_one_table_json_and_png(trained_run, image_data, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["prune", "--weights", str(trained_run / "final.safetensors"), "--data", str(image_data), *COMMON]
    assert main([*argv, "--speed-up", "1.5", "--compare", "l1", "random", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    comparison = json.loads((out / "comparison.json").read_text())
    assert [r["importance"] for r in comparison["rows"]] == ["eca", "l1", "random"]
    assert (out / "comparison.png").stat().st_size > 0
    for row in comparison["rows"]:
        assert row["speed_up"] >= 1.5 and (out / row["importance"] / "pruned.safetensors").is_file()
        assert row["importance"] in printed


def run_cli(*argv: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecanet", *argv], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(trained_run, image_data, tmp_path):
    weights = str(trained_run / "final.safetensors")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    two = make_image_folder(tmp_path / "two" / "train", {c: 4 for c in list(COLORS)[:2]}).parent
    make_image_folder(two / "val", {c: 2 for c in list(COLORS)[:2]})
    base = ["prune", "--weights", weights, "--data", str(image_data), *COMMON]
    cases = [
        (base + ["--ratio", "1.5"], "ratio (--ratio) must be in [0, 1), got 1.5"),
        (base + ["--speed-up", "0.5"], "speed_up (--speed-up) must be at least 1, got 0.5"),
        (base, "give exactly one of ratio (--ratio) and speed_up (--speed-up)"),
        (base + ["--ratio", "0.5", "--speed-up", "2"], "give exactly one of ratio"),
        (base + ["--speed-up", "1000"], "speed_up 1000 cannot be reached: the largest reachable is"),
        (base + ["--ratio", "0.5", "--model", "resnet20"], "holds eca_resnet20, not resnet20 (--model)"),
        (base + ["--ratio", "0.5", "--importance", "magic"], "unknown importance 'magic'"),
        (["prune", "--ratio", "0.5"], "--weights is required"),
        (["prune", "--weights", weights, "--data", str(empty), "--ratio", "0.5", *COMMON], str(empty / "train")),
        (["prune", "--weights", weights, "--data", str(two), "--ratio", "0.5", *COMMON], "2 classes, but"),
    ]
    for i, (argv, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        result = run_cli(*argv, "--output", str(out))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (argv, result.stderr[-1500:])
        assert lines[-1].startswith("ecanet prune: error: ") and message in lines[-1], (argv, lines[-1])
        assert "Traceback" not in result.stderr
        assert not out.exists(), argv


@pytest.mark.slow
def test_finetuning_resumes(trained_run, image_data, tmp_path):
    out = tmp_path / "resumed"
    argv = ["prune", "--weights", str(trained_run / "final.safetensors"), "--data", str(image_data), *COMMON]
    argv += ["--ratio", "0.5", "--output", str(out)]
    assert main([*argv, "--finetune-epochs", "1"]) == 0
    metrics = out / "finetune" / "metrics.jsonl"
    first = metrics.read_text().splitlines()
    assert main([*argv, "--finetune-epochs", "2", "--resume"]) == 0
    records = metrics.read_text().splitlines()
    assert len(records) == 2 and records[0] == first[0]  # epoch 0 kept, epoch 1 added
    assert json.loads(records[1])["epoch"] == 1
