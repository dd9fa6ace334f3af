import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ecanet import create_model, save_weights
from ecanet.cli import main
from ecanet.studies.viz import channel_attention, grad_cam, load_images
from tests.helpers import require_extra


@pytest.fixture
def trained(trained_run):
    return trained_run / "final.safetensors"


def _inputs_of_attention(model, x):
    """What every attention module receives in a forward pass (captured independently of ``viz``)."""
    seen = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, n=n: seen.__setitem__(n, args[0].clone()))
        for n, m in model.named_modules()
        if n.endswith((".eca", ".se", ".cbam"))
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("attn", ["eca", "se", "cbam"])
def test_channel_attention_equals_each_modules_gate_on_its_input(attn):
    torch.manual_seed(0)
    model = create_model(f"{attn}_resnet20", num_classes=3)
    x = torch.randn(2, 3, 16, 16)
    weights = channel_attention(model, x)
    inputs = _inputs_of_attention(model, x)
    modules = dict(model.named_modules())
    assert list(weights) == list(inputs) and len(weights) == 9
    for name, w in weights.items():
        m, h = modules[name], inputs[name]
        pooled = h.mean((2, 3))
        if attn == "eca":  # the 1-D convolution over channels, written with conv1d
            k = m.kernel_size
            expected = torch.sigmoid(F.conv1d(pooled[:, None], m.conv.weight, padding=(k - 1) // 2))[:, 0]
        elif attn == "se":
            expected = torch.sigmoid(m.fc2(torch.relu(m.fc1(pooled))))
        else:
            expected = torch.sigmoid(m.channel_mlp(pooled) + m.channel_mlp(h.amax((2, 3))))
        torch.testing.assert_close(w, expected.detach(), rtol=1e-5, atol=1e-6)
    assert model.layer1[0].fused  # the plain formulation was only used during the capture


def test_grad_cam_equals_the_cam_computed_by_hand():
    """Grad-CAM (Selvaraju et al.): channel weights = spatial mean of d score / d activation; map =
    ReLU(sum of weighted activations), scaled to [0, 1]. At layer1 of a CIFAR ResNet the map has the image's
    size, so no resizing enters."""
    require_extra("viz")
    torch.manual_seed(0)
    model = create_model("eca_resnet20", num_classes=3).eval()
    x = torch.randn(2, 3, 16, 16)
    classes = [2, 0]
    maps, _ = grad_cam(model, "layer1", x, classes)
    captured = {}
    handle = model.layer1.register_forward_hook(lambda m, a, out: captured.__setitem__("a", out))
    scores = model(x)
    handle.remove()
    activation = captured["a"]
    (grads,) = torch.autograd.grad(scores[torch.arange(2), classes].sum(), activation)
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * activation).sum(1)).detach()

    def scale(m):  # to [0, 1] as pytorch-grad-cam does: (m - min) / (1e-7 + max)
        m = m - m.amin((1, 2), keepdim=True)
        return m / (1e-7 + m.amax((1, 2), keepdim=True))

    cam = scale(scale(cam))  # once per target layer, once more when the layers' maps are averaged
    np.testing.assert_allclose(maps, cam.numpy(), rtol=1e-4, atol=1e-5)


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
    require_extra("viz")
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
    require_extra("viz")  # the rest explains with Grad-CAM
    assert main(["viz", "cam", str(img), "--weights", str(weights), "--layer", "layer9"]) == 2
    assert "--layer: no module 'layer9'" in capsys.readouterr().err
