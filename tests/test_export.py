import warnings

import onnx
import pytest
import torch

from ecanet import create_model, save_weights
from ecanet.cli import main
from ecanet.export import ExportError, export_model


def calibrated(name):
    """Random weights with BatchNorm statistics from one batch, so eval outputs are O(1), not ~0."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 64, 64))
    return model.eval()


@pytest.mark.parametrize("name", ["resnet18", "eca_resnet18", "eca_mobilenet_v2"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_parity(name, fmt, tmp_path):
    model = calibrated(name)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).abs().max() > 1e-2  # a check on real signal
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_model(model, tmp_path / f"m.{fmt}", fmt, image_size=64)
    assert result["max_abs_diff"] <= 1e-4
    if fmt == "onnx":
        graph = onnx.load(str(tmp_path / "m.onnx")).graph
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic (dynamic) batch axis


def test_export_fails_above_tolerance(tmp_path):
    with pytest.raises(ExportError, match=r"m\.pt: exported model differs from PyTorch by 0 \(tolerance -1\)"):
        export_model(calibrated("eca_resnet20"), tmp_path / "m.pt", "torchscript", image_size=32, tolerance=-1.0)


def test_export_cli_from_weights(tmp_path, capsys):
    weights = save_weights(calibrated("eca_resnet20"), tmp_path / "w.safetensors")
    out = tmp_path / "m.pt"
    args = ["export", "--weights", str(weights), "--format", "torchscript", "--output", str(out), "--image-size", "32"]
    assert main(args) == 0
    assert "largest absolute difference to PyTorch" in capsys.readouterr().out
    loaded = torch.jit.load(str(out))
    assert loaded(torch.randn(5, 3, 32, 32)).shape == (5, 10)
    assert main(["export", "--output", str(out)]) == 2
    assert "--model or --weights is required" in capsys.readouterr().err
