import warnings

import pytest
import torch

from ecanet import create_model, save_weights
from ecanet.cli import main
from ecanet.export import ExportError, export_model
from tests.helpers import require_extra


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


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "eca_resnet18", "eca_mobilenet_v2"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_parity(name, fmt, tmp_path):
    if fmt == "onnx":
        require_extra("export")
    model = calibrated(name)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).abs().max() > 1e-2  # a check on real signal
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_model(model, tmp_path / f"m.{fmt}", fmt, image_size=64)
    assert result["max_abs_diff"] <= 1e-4
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(tmp_path / "m.onnx")).graph
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic (dynamic) batch axis


def test_export_fails_above_tolerance(tmp_path):
    with pytest.raises(ExportError, match=r"m\.pt: exported model differs from PyTorch by [0-9.e+-]+ \(tolerance -1\)"):
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


@pytest.mark.slow
def test_exported_program_and_dynamic_size_onnx_match_pytorch_at_two_sizes(tmp_path):
    require_extra("export")
    import onnx
    import onnxruntime

    model = calibrated("eca_resnet18")
    x64, x96 = torch.randn(3, 3, 64, 64), torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        want64, want96 = model(x64), model(x96)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_model(model, tmp_path / "m.pt2", "exported", image_size=64, dynamic_size=True)
        export_model(model, tmp_path / "m.onnx", "onnx", image_size=64, dynamic_size=True)
    assert result["sizes"] == [64, 96]
    program = torch.export.load(str(tmp_path / "m.pt2")).module()  # loaded independently of export_model
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for x, want in ((x64, want64), (x96, want96)):
        torch.testing.assert_close(program(x), want, rtol=0, atol=1e-4)
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param for d in (dims[0], dims[2], dims[3]))  # batch, height and width symbolic
    with pytest.raises(ExportError, match=r"--output: .*m\.onnx: a torch.export program is saved as a \.pt2 file"):
        export_model(model, tmp_path / "m.onnx", "exported")


@pytest.mark.slow
def test_export_builds_the_model_the_weights_file_holds(tmp_path, capsys):
    model = calibrated("eca_resnet18")  # 10 classes
    weights = save_weights(model, tmp_path / "w.safetensors")
    out = tmp_path / "m.pt2"
    args = ["export", "--weights", str(weights), "--output", str(out), "--format", "exported", "--image-size", "64"]
    assert main([*args, "--model", "eca_resnet18"]) == 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(str(out)).module()(x), model(x), rtol=0, atol=1e-5)
    capsys.readouterr()
    out.unlink()
    assert main([*args, "--model", "eca_resnet18", "--num-classes", "1000"]) == 2
    assert "w.safetensors: holds a 10-class model, not 1000 classes (--num-classes)" in capsys.readouterr().err
    assert main([*args, "--model", "resnet18"]) == 2
    assert "w.safetensors: holds eca_resnet18, not resnet18 (--model)" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["eca_resnet20", "ceca_resnet20"])
def test_onnx_runs_each_eca_gate_as_one_conv_node(name, tmp_path):
    require_extra("export")
    import onnx

    model = calibrated(name)
    result = export_model(model, tmp_path / "m.onnx", "onnx", image_size=32)
    assert result["max_abs_diff"] <= 1e-4  # circular padding included
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    gates = sum(type(m).__name__ == "ECA" for m in model.modules())
    assert ops.count("Conv") == convs + gates and "Slice" not in ops  # not k shifted products per gate
