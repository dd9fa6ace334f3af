import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ecanet import ECA, SE, complexity, create_model
from ecanet.cli import main
from ecanet.models import plain_formulation

ROOT = Path(__file__).resolve().parents[2]


def hand_count_macs(model, size):
    """Reference: multiply-accumulates of every Conv and Linear layer, from their output shapes; ECA's 1-D
    convolution (k per channel, computed from its ``conv`` weight without calling the Conv1d module)."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, ECA):
            total += out.shape[0] * out.shape[1] * m.kernel_size
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features
        else:
            total += out.numel() * (m.in_channels // m.groups) * m.weight.shape[2:].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (ECA, nn.Conv2d, nn.Linear))]
    with torch.no_grad(), plain_formulation(model):  # attention called as modules, so their hooks run
        model.eval()(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", ["resnet18", "eca_resnet50", "se_mobilenet_v2", "cbam_resnet20"])
def test_macs_equal_hand_count(name):
    model = create_model(name)
    assert complexity(model, (3, 64, 64))["macs"] == hand_count_macs(model, 64)


def test_eca_resnet50_attention_cost():
    with torch.device("meta"):
        eca, plain = create_model("eca_resnet50"), create_model("resnet50")
    c_eca, c_plain = complexity(eca), complexity(plain)
    assert c_eca["attention_params"] == 80 == c_eca["params"] - c_plain["params"]
    blocks = [(3, 256, 3, 56), (4, 512, 5, 28), (6, 1024, 5, 14), (3, 2048, 7, 7)]  # (n, C, k, side)
    assert c_eca["attention_macs"] == sum(n * c * k for n, c, k, _ in blocks) == c_eca["macs"] - c_plain["macs"]
    assert c_eca["attention_extra_ops"] == sum(n * 2 * c * s * s for n, c, _, s in blocks)
    assert c_eca["attention_macs"] / c_plain["macs"] < 1e-4
    assert c_plain["macs"] == 4_089_184_256  # torchvision ResNet-50 at 224x224


def test_info_json(capsys):
    assert main(["info", "eca_resnet50", "resnet20", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["eca_resnet50", "resnet20"]
    assert rows[0]["attention_params"] == 80 and rows[0]["eca_k"] == [3, 5, 5, 7]
    assert rows[0]["params_paper"] == pytest.approx(25_557_112 / 2**20)
    assert rows[1]["image_size"] == 32 and rows[1]["eca_k"] is None


@pytest.mark.slow
def test_info_table_default_lists_imagenet_zoo(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "Params (2^20)" in lines[1] and "FLOPs (2^30)" in lines[1]
    eca50 = next(line for line in lines if line.startswith("eca_resnet50 "))
    assert "24.37" in eca50 and "[3, 5, 5, 7]" in eca50
    assert sum(1 for line in lines[3:] if line.strip()) == 36


def test_info_unknown_model_message(capsys):
    assert main(["info", "eca_resnet51"]) == 2
    assert "unknown model 'eca_resnet51'; did you mean" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "ecanet", "info", "eca_resnet20"], capture_output=True, text=True, check=True
    )
    assert "eca_resnet20" in out.stdout and "[3, 3, 3]" in out.stdout


def test_torch_hub_local():
    model = torch.hub.load(str(ROOT), "eca_resnet50", source="local", num_classes=10)
    assert model.config == {"model": "eca_resnet50", "num_classes": 10, "eca_k": [3, 5, 5, 7]}
    assert isinstance(torch.hub.load(str(ROOT), "se_mobilenet_v2", source="local").features[1].conv[-1], SE)
