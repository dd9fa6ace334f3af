"""The base install: every command works without the optional extras, and a command that needs a missing
extra says which in one line (run in a subprocess with the extras' modules made unimportable)."""

import json
import subprocess
import sys

import pytest
import torch

from ecanet import create_model, save_weights
from ecanet.errors import EXTRAS

NO_EXTRAS = [m for modules in EXTRAS.values() for m in modules]

RUNNER = """
import sys
for m in {blocked!r}:
    sys.modules[m] = None  # as if the package were not installed
from ecanet.cli import main
sys.exit(main({argv!r}))
"""


def ecanet_without(blocked: list[str], *argv: str, cwd=None) -> subprocess.CompletedProcess:
    code = RUNNER.format(blocked=blocked, argv=list(argv))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    return save_weights(create_model("eca_resnet20", num_classes=3), tmp_path_factory.mktemp("w") / "w.safetensors")


def one_line_naming(result: subprocess.CompletedProcess, command: str, extra: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert lines[-1] == (
        f'ecanet {command}: needs the "{extra}" extra ({EXTRAS[extra][0]} is not installed): '
        f'pip install "ecanet[{extra}]"'
    )
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_commands_work_without_any_extra(weights, tmp_path):
    for argv in (["--help"], ["train", "--help"], ["detect", "train", "--help"], ["export", "--help"]):
        result = ecanet_without(NO_EXTRAS, *argv)
        assert result.returncode == 0, (argv, result.stderr[-2000:])
        assert "usage: ecanet" in result.stdout
    result = ecanet_without(NO_EXTRAS, "info", "eca_resnet20", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)[0]["attention_params"] > 0
    out = tmp_path / "m.pt"
    args = ["export", "--weights", str(weights), "--format", "torchscript", "--output", str(out), "--image-size", "32"]
    result = ecanet_without(NO_EXTRAS, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.jit.load(str(out))(torch.randn(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.slow
def test_extra_dependent_commands_name_their_extra(weights, tmp_path):
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(image)
    cases = [
        (
            "export",
            "export",
            ["export", "--weights", str(weights), "--format", "onnx", "--output", str(tmp_path / "m.onnx")],
        ),
        (
            "viz",
            "viz",
            ["viz", "cam", str(image), "--weights", str(weights), "--layer", "layer3", "--image-size", "32"],
        ),
        (
            "detect",
            "detection",
            ["detect", "train", "--images", str(tmp_path), "--annotations", str(tmp_path / "a.json")],
        ),
        (
            "detect",
            "detection",
            ["detect", "convert-masks", "--images", str(tmp_path), "--masks", str(tmp_path), "--output", "c.json"],
        ),
        ("bench", "timm", ["bench", "--models", "timm:eca_resnet50", "--repeats", "1", "--warmup", "0", "--no-memory"]),
        ("prune", "prune", ["prune", "--weights", str(weights), "--ratio", "0.5", "--output", str(tmp_path / "p")]),
    ]
    for command, extra, argv in cases:
        one_line_naming(ecanet_without(NO_EXTRAS, *argv, cwd=tmp_path), command, extra)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "p").exists()


@pytest.mark.slow
def test_training_without_tensorboard_logs_it_off_and_goes_on(image_data, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--data", str(image_data), "--model", "resnet20", "--epochs", "1", "--batch-size", "8"]
    argv += ["--image-size", "16", "--workers", "0", "--compare", "--output", str(out)]
    result = ecanet_without(["tensorboard"], *argv)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'TensorBoard logging off: needs the "tensorboard" extra' in result.stderr
    assert (out / "final.safetensors").is_file() and not (out / "tensorboard").exists()
    with_tb = tmp_path / "run_tb"
    result = ecanet_without([], *argv[:-1], str(with_tb))
    assert result.returncode == 0 and any((with_tb / "tensorboard").iterdir())


def test_every_extra_is_declared_and_all_installs_them():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(EXTRAS) <= set(extras)
    (bundle,) = extras["all"]  # "ecanet[a,b,...]": every optional feature
    assert set(bundle.removeprefix("ecanet[").removesuffix("]").split(",")) == set(EXTRAS)
    assert "ecanet[all]" in extras["test"]
