"""A torchvision or timm model with ECA put in (``replace_se``, ``attach_eca``) is saved and loaded back
identical: the file records how ECA went in, ``load_checkpoint`` rebuilds the network (or adapts the one given)
before loading; ``ecanet train --model tv:NAME|timm:NAME --replace-se|--attach-eca`` fine-tunes one, keeping a
pretrained file's tensors, and ``ecanet predict`` answers with it."""

import json

import pytest
import torch
import torchvision

from ecanet import (
    ECA,
    CheckpointError,
    attach_eca,
    create_external,
    create_model,
    load_checkpoint,
    replace_se,
    save_weights,
)
from ecanet.cli import main
from tests.helpers import require_extra


def assert_same(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_swapped_torchvision_model_round_trips(tmp_path):
    torch.manual_seed(0)
    model = create_external("tv:mobilenet_v3_small", num_classes=4)
    replace_se(model, kernel_size=5)
    assert model.config["adapt"] == [{"op": "replace_se", "kernel_size": 5, "gamma": 2, "beta": 1, "padding": "zeros"}]
    path = save_weights(model, tmp_path / "m.safetensors")
    x = torch.randn(2, 3, 64, 64)
    assert_same(model, load_checkpoint(path), x)
    plain = torchvision.models.mobilenet_v3_small(num_classes=4)  # the user's own network: adapted, then loaded
    assert_same(model, load_checkpoint(path, model=plain), x)
    assert sum(isinstance(m, ECA) for m in plain.modules()) == 9


def test_zoo_model_attached_by_name_round_trips(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3)
    attach_eca(model, where=["layer3.*.conv2"], input_size=(3, 32, 32))
    path = save_weights(model, tmp_path / "m.safetensors")
    loaded = load_checkpoint(path)
    assert "layer3.0.conv2.eca.conv.weight" in loaded.state_dict()
    assert_same(model, loaded, torch.randn(2, 3, 32, 32))


def test_timm_model_attached_round_trips(tmp_path):
    require_extra("timm")
    torch.manual_seed(0)
    model = create_external("timm:regnetx_002", num_classes=3)
    attach_eca(model)
    path = save_weights(model, tmp_path / "m.safetensors")
    assert_same(model, load_checkpoint(path), torch.randn(2, 3, 64, 64))


def test_unknown_external_names_and_a_file_for_another_model_are_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"^unknown model 'tv:resnet7': torchvision has no classification model"):
        create_external("tv:resnet7")
    path = save_weights(create_external("tv:resnet18", num_classes=3), tmp_path / "r.safetensors")
    with pytest.raises(CheckpointError, match=r"r.safetensors: holds tv:resnet18, not tv:resnet34 \(--model\)"):
        load_checkpoint(path, "tv:resnet34")


def test_train_a_swapped_torchvision_model_from_pretrained_and_predict(image_data, tmp_path, capsys):
    torch.manual_seed(0)
    base = torchvision.models.mobilenet_v3_small()  # stands for torchvision's pretrained file
    pretrained = tmp_path / "mnv3.pth"
    torch.save(base.state_dict(), pretrained)
    out = tmp_path / "run"
    args = ["train", "--model", "tv:mobilenet_v3_small", "--replace-se", "--pretrained", str(pretrained)]
    args += ["--data", str(image_data), "--output", str(out), "--epochs", "2", "--image-size", "32"]
    assert main([*args, "--batch-size", "8", "--workers", "0", "--lr", "0.01"]) == 0
    model = load_checkpoint(out / "final.safetensors")
    assert model.config["classes"] == ["blue", "green", "red"] and model.config["adapt"][0]["op"] == "replace_se"
    first = torch.load(out / "checkpoint.pt", weights_only=True)  # the run resumable from its last epoch
    assert first["epoch"] == 1
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2
    image = next((image_data / "val" / "red").glob("*.png"))
    capsys.readouterr()
    assert main(["predict", "--weights", str(out / "final.safetensors"), str(image)]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")


def test_pretrained_tensors_are_kept_by_the_swap(tmp_path):
    """``--pretrained`` goes into the network before ``--replace-se``: every tensor but SE's comes from the file."""
    from ecanet.classification import build_model
    from ecanet.classification.config import resolve

    torch.manual_seed(1)
    base = torchvision.models.efficientnet_b0(num_classes=3)
    torch.save(base.state_dict(), tmp_path / "b0.pth")
    cfg = resolve(model="tv:efficientnet_b0", pretrained=str(tmp_path / "b0.pth"), replace_se=True)
    torch.manual_seed(2)
    model = build_model(cfg, num_classes=3)
    state, kept = model.state_dict(), base.state_dict()
    se = {k for k in kept if k not in state}
    assert se and all(".fc1." in k or ".fc2." in k for k in se)
    assert all(torch.equal(state[k], v) for k, v in kept.items() if k in state)
    with pytest.raises(ValueError, match=r"^--eca-k: for zoo models, not tv:efficientnet_b0$"):
        build_model(resolve(model="tv:efficientnet_b0", eca_k="adaptive"), num_classes=3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,adapt",
    [("tv:efficientnet_b0", "replace"), ("tv:regnet_x_400mf", "attach"), ("tv:densenet121", "attach"),
     ("timm:convnext_atto", "attach")],
)  # fmt: skip
def test_adapted_models_export_to_onnx_with_parity(name, adapt, tmp_path):
    """ONNX Runtime's output equals PyTorch's (export_model checks it) for swapped and attached networks,
    including ECA applied by a forward hook and on a channels-last (NHWC) output."""
    require_extra("export")
    if name.startswith("timm:"):
        require_extra("timm")
    torch.manual_seed(0)
    model = _timm_nhwc_convnext() if name == "timm:convnext_atto" else create_external(name, num_classes=5)
    (replace_se if adapt == "replace" else attach_eca)(model)
    model.train()(torch.randn(4, 3, 64, 64))  # BatchNorm statistics that are not the identity
    from ecanet.export import export_model

    result = export_model(model.eval(), tmp_path / "m.onnx", "onnx", image_size=64)
    assert result["max_abs_diff"] <= 1e-4


def _timm_nhwc_convnext():
    import timm

    return timm.create_model("convnext_atto", pretrained=False, num_classes=5, conv_mlp=False)


@pytest.mark.slow
def test_train_attaches_eca_to_a_torchvision_model(image_data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", "tv:resnet18", "--attach-eca", "--data", str(image_data), "--output", str(out)]
    assert main([*args, "--epochs", "1", "--image-size", "32", "--batch-size", "8", "--workers", "0"]) == 0
    model = load_checkpoint(out / "final.safetensors")
    assert isinstance(model, torchvision.models.ResNet) and isinstance(model.layer1[0].eca, ECA)
    assert model.config["adapt"] == [
        {"op": "attach_eca", "kernel_size": None, "gamma": 2, "beta": 1, "padding": "zeros", "shared": True}
    ]


def test_an_unknown_recorded_step_is_one_line():
    from ecanet.adapt import replay

    with pytest.raises(ValueError, match=r"^adapt: unknown step 'prune' \(attach_eca, replace_se\)$"):
        replay(torchvision.models.resnet18(), [{"op": "prune"}])
