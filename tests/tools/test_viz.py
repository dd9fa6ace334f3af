import numpy as np
import pytest
import torch
from PIL import Image

from ecanet import create_model, save_weights
from ecanet.cli import main
from ecanet.viz import channel_attention, grad_cam, load_images


@pytest.fixture
def trained(trained_run):
    return trained_run / "final.safetensors"


def test_channel_attention_matches_the_layers():
    model = create_model("eca_resnet20", num_classes=3)
    x = torch.randn(2, 3, 16, 16)
    weights = channel_attention(model, x)
    assert list(weights) == [n for n, m in model.named_modules() if m.__class__.__name__ == "ECA"]
    assert weights["layer3.2.eca"].shape == (2, 64)
    assert ((weights["layer1.0.eca"] > 0) & (weights["layer1.0.eca"] < 1)).all()
    assert model.layer1[0].fused  # the plain formulation was only used during the capture


def test_viz_attention_cli_writes_pngs_of_expected_size(trained, image_data, tmp_path):
    images = sorted((image_data / "val" / "red").glob("*.png"))[:2]
    out = tmp_path / "viz"
    assert (
        main(
            [
                "viz",
                "attention",
                *map(str, images),
                "--weights",
                str(trained),
                "--output",
                str(out),
                "--image-size",
                "16",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["attention_0.png", "attention_1.png", "attention_mean.png", "attention_spread.png"]
    for p in out.glob("*.png"):
        with Image.open(p) as im:
            im.load()
            assert im.size == (1000, int(100 * (0.3 * 9 + 1.0)))  # 9 ECA layers in resnet20


def test_grad_cam_has_image_size_and_depends_on_class(trained, image_data, tmp_path):
    from ecanet import load_checkpoint

    model = load_checkpoint(trained)
    images = load_images(sorted((image_data / "val" / "red").glob("*.png"))[:2], 16)
    maps0, _ = grad_cam(model, "layer3", images, [0, 0])
    maps2, _ = grad_cam(model, "layer3", images, [2, 2])
    assert maps0.shape == (2, 16, 16)
    assert not np.allclose(maps0, maps2)
    out = tmp_path / "cam"
    assert (
        main(
            [
                "viz",
                "cam",
                str(sorted((image_data / "val" / "red").glob("*.png"))[0]),
                "--weights",
                str(trained),
                "--layer",
                "layer3",
                "--class",
                "1",
                "--output",
                str(out),
                "--image-size",
                "16",
            ]
        )
        == 0
    )
    [png] = list(out.glob("cam_*_class1.png"))
    with Image.open(png) as im:
        assert im.size == (16, 16)


def test_viz_errors(tmp_path, capsys):
    weights = save_weights(create_model("resnet20"), tmp_path / "w.safetensors")
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(img)
    assert main(["viz", "attention", str(img), "--weights", str(weights), "--output", str(tmp_path / "o")]) == 2
    assert "has no ECA, SE or CBAM layer" in capsys.readouterr().err
    assert main(["viz", "cam", str(img), "--weights", str(weights), "--layer", "layer9"]) == 2
    assert "--layer: no module 'layer9'" in capsys.readouterr().err
