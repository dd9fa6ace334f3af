"""From a trained file to answers: the weights record the class names and the training size, `ecanet predict`
answers files, folders and globs with names and probabilities (CSV and JSON on request), an unreadable image
gets one line while the others are answered, and a file without names says so and shows indices."""

import csv
import json

import pytest
import torch

from ecanet import create_model, load_checkpoint, save_weights
from ecanet.classification.data import eval_transform
from ecanet.cli import main
from ecanet.images import load_rgb


def test_trained_weights_record_class_names_and_size(trained_run):
    model = load_checkpoint(trained_run / "final.safetensors")
    assert model.config["classes"] == ["blue", "green", "red"]  # ImageFolder order
    assert model.config["image_size"] == 16


def test_predict_answers_with_names_and_probabilities(trained_run, image_data, tmp_path, capsys):
    weights = trained_run / "final.safetensors"
    red = sorted((image_data / "val" / "red").glob("*.png"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    out_csv, out_json = tmp_path / "answers.csv", tmp_path / "answers.json"
    argv = ["predict", "--weights", str(weights), str(red[0]), str(image_data / "val" / "green"), str(broken)]
    assert main([*argv, "--top-k", "2", "--output", str(out_json)]) == 0
    printed, err = capsys.readouterr()
    assert f"{broken}: cannot read this image" in err and len(err.strip().splitlines()) == 1
    answers = json.loads(out_json.read_text())
    assert [a["image"] for a in answers] == [str(red[0])] + [
        str(p) for p in sorted((image_data / "val" / "green").glob("*.png"))
    ]
    model = load_checkpoint(weights).eval()
    with torch.no_grad():
        probs = model(eval_transform(16)(load_rgb(str(red[0]))).unsqueeze(0)).softmax(1)[0]
    top = probs.topk(2)
    assert [t["class"] for t in answers[0]["top"]] == [model.config["classes"][i] for i in top.indices]
    assert [t["probability"] for t in answers[0]["top"]] == pytest.approx(top.values.tolist())
    assert printed.splitlines()[0].startswith(f"{red[0]}: {answers[0]['top'][0]['class']} ")
    assert main([*argv[:-1], "--output", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert rows[0]["image"] == str(red[0]) and rows[0]["rank"] == "1" and len(rows) == 5 * 3  # 3 classes, top 3


def test_predict_without_names_shows_indices_and_says_why(image_data, tmp_path, capsys):
    weights = tmp_path / "plain.safetensors"
    save_weights(create_model("eca_resnet20", num_classes=3), weights)
    image = next((image_data / "val" / "red").glob("*.png"))
    assert main(["predict", "--weights", str(weights), str(image), "--image-size", "16"]) == 0
    printed, err = capsys.readouterr()
    assert "records no class names" in err
    assert all(name in {"0", "1", "2"} for name in (p.split()[0] for p in printed.split(": ", 1)[1].split(", ")))


def test_predict_bad_input_is_one_line(trained_run, tmp_path, capsys):
    weights = str(trained_run / "final.safetensors")
    assert main(["predict", "--weights", weights, str(tmp_path / "nothing*.png")]) == 2
    assert "nothing*.png: no such image file, folder or pattern" in capsys.readouterr().err
    broken = tmp_path / "b.png"
    broken.write_bytes(b"x")
    assert main(["predict", "--weights", weights, str(broken)]) == 2
    assert "no image could be read" in capsys.readouterr().err
    assert main(["predict", "--weights", weights, str(broken), "--output", str(tmp_path / "a.txt")]) == 2
    assert "--output: " in capsys.readouterr().err


def test_exported_files_carry_the_class_names(trained_run, tmp_path):
    from ecanet.export import export_model

    model = load_checkpoint(trained_run / "final.safetensors")
    export_model(model, tmp_path / "m.pt2", fmt="exported", image_size=16)
    extra = {"ecanet.classes": ""}
    torch.export.load(str(tmp_path / "m.pt2"), extra_files=extra)
    assert json.loads(extra["ecanet.classes"]) == ["blue", "green", "red"]
    onnx = pytest.importorskip("onnx", reason='needs the "export" extra')
    export_model(model, tmp_path / "m.onnx", fmt="onnx", image_size=16)
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["ecanet.classes"]) == ["blue", "green", "red"]
