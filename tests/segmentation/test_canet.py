"""CA-Net: built by name with any channel attention, its attention maps with the documented shapes and values
(the gates' maps in (0, 1); ECA's channel weights equal ECA's own), any input size, training that lowers the
loss, a bit-exact save and reload, ONNX parity, ``ecanet segment train --model canet`` end to end, bad input."""

import json

import pytest
import torch

from ecanet import ECA, create_segmenter, load_segmenter
from ecanet.cli import main
from ecanet.segmentation.canet import DualPoolSE
from tests.helpers import make_segmentation_data, require_extra


@pytest.mark.parametrize("attention", ["canet", "eca", "se", "cbam", None])
def test_any_channel_attention_and_its_maps(attention):
    torch.manual_seed(0)
    model = create_segmenter("canet", num_classes=3, channel_attention=attention, width=8).eval()
    x = torch.randn(2, 3, 40, 52)  # not a multiple of 16: padded, then cropped back
    with torch.no_grad():
        out = model(x, return_attention=True)
        plain = model(x)
    assert out["out"].shape == (2, 3, 40, 52) and torch.equal(out["out"], plain["out"])
    maps = out["attention"]
    assert {k: tuple(v.shape) for k, v in maps["spatial"].items()} == {3: (2, 2, 10, 13), 2: (2, 2, 20, 26)}
    assert all(((v > 0) & (v < 1)).all() for v in maps["spatial"].values())
    assert maps["scale"].shape == (2, 4) and maps["scale_pixel"].shape == (2, 4, 40, 52)
    widths = {4: 128, 3: 64, 2: 32, 1: 16}  # 2 x the stage's width (width 8: 64, 32, 16, 8)
    if attention is None:
        assert maps["channel"] == {}
    else:
        assert {k: v.shape for k, v in maps["channel"].items()} == {k: (2, c) for k, c in widths.items()}
    if attention == "eca":  # the weights reported are the ECA module's own
        block = model.decoder[0]
        assert isinstance(block.attention, ECA)
        f = block.branch(torch.cat([torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8)], 1))
        torch.testing.assert_close(block.attention(f), f * block.attention.attention(f)[:, :, None, None])
    if attention == "canet":
        se = model.decoder[0].attention
        assert isinstance(se, DualPoolSE)
        f = torch.randn(2, 16, 5, 5)
        expected = torch.sigmoid(se.mlp(f.mean((2, 3)))) + torch.sigmoid(se.mlp(f.amax((2, 3))))
        torch.testing.assert_close(se(f), f * expected[:, :, None, None])


def test_parameters_match_the_paper_at_width_16():
    """The authors' release (base width 16) has about 2.8 M parameters; ours too."""
    model = create_segmenter("canet", num_classes=2)
    assert 2.7e6 < sum(p.numel() for p in model.parameters()) < 2.9e6
    plain = create_segmenter(
        "canet", num_classes=2, channel_attention=None, spatial_attention=False, scale_attention=False
    )
    assert not any(isinstance(m, (ECA, DualPoolSE)) for m in plain.modules())
    assert plain(torch.randn(1, 3, 32, 32)).keys() == {"out"}


def test_training_lowers_the_loss_and_the_file_reloads_bit_exactly(tmp_path):
    torch.manual_seed(0)
    model = create_segmenter("canet", num_classes=2, channel_attention="eca", width=4)
    x = torch.randn(4, 3, 32, 32)
    y = (x[:, 0] > 0).long()  # a target the network can learn
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x)["out"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    from ecanet import save_weights

    path = save_weights(model, tmp_path / "canet.safetensors")
    loaded = load_segmenter(path).eval()
    assert loaded.config["channel_attention"] == "eca" and loaded.config["width"] == 4
    with torch.no_grad():
        assert torch.equal(loaded(x)["out"], model.eval()(x)["out"])


def test_onnx_export_has_parity(tmp_path):
    require_extra("export")
    import onnxruntime

    torch.manual_seed(0)
    model = create_segmenter("canet", num_classes=2, channel_attention="eca", width=4).eval()
    x = torch.randn(1, 3, 48, 48)

    class Logits(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)["out"]

    torch.onnx.export(Logits(model), (x,), str(tmp_path / "c.onnx"), dynamo=True)
    session = onnxruntime.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x)["out"], atol=1e-4, rtol=1e-4)


def test_segment_train_canet_end_to_end(tmp_path, capsys):
    images, masks = make_segmentation_data(tmp_path / "d", n=6)
    out = tmp_path / "run"
    argv = ["segment", "train", "--model", "canet", "--channel-attention", "eca", "--width", "4"]
    argv += ["--images", str(images), "--masks", str(masks), "--output", str(out), "--image-size", "40"]
    assert main([*argv, "--epochs", "2", "--batch-size", "3", "--workers", "0", "--lr", "0.01"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_classes"] == 3
    model = load_segmenter(out / "final.safetensors")
    assert model.config["kind"] == "canet" and isinstance(model.decoder[0].attention, ECA)
    argv = ["segment", "eval", "--weights", str(out / "final.safetensors"), "--images", str(images)]
    assert main([*argv, "--masks", str(masks), "--image-size", "40"]) == 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"channel_attention": "sk"}, r"^--channel-attention: unknown 'sk'; choose one of"),
        ({"width": 2}, r"^--width: CA-Net's base width must be an integer of at least 4, got 2$"),
        ({"scales": 5}, r"^--scales: CA-Net weighs 1 to 4 decoder scales, got 5$"),
    ],
)
def test_bad_options_are_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_segmenter("canet", num_classes=2, **kwargs)


def test_viz_draws_the_attention_maps_of_a_trained_file(tmp_path, capsys):
    from PIL import Image

    from ecanet import save_weights

    images, _ = make_segmentation_data(tmp_path / "d", n=2)
    weights = save_weights(create_segmenter("canet", num_classes=3, width=4), tmp_path / "c.safetensors")
    argv = ["viz", "canet", str(images / "0.png"), str(images / "1.png"), "--weights", str(weights)]
    assert main([*argv, "--output", str(tmp_path / "v"), "--image-size", "40"]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(tmp_path / "v" / "canet_0.png"), str(tmp_path / "v" / "canet_1.png")]
    assert Image.open(written[0]).size == (1200, 600)  # four panels a row, two rows, at 100 dpi
    from ecanet import create_model
    from ecanet.studies.viz import canet_figures

    with pytest.raises(ValueError, match=r"^ecanet viz canet: the weights hold a ResNet, not CA-Net"):
        canet_figures(create_model("resnet20"), [str(images / "0.png")], tmp_path / "w", 32)


@pytest.mark.slow
def test_segment_compare_reports_dice_with_paired_intervals(tmp_path, capsys):
    images, masks = make_segmentation_data(tmp_path / "d", n=6)
    out = tmp_path / "cmp"
    argv = ["segment", "compare", "--model", "canet", "--width", "4", "--images", str(images), "--masks", str(masks)]
    argv += ["--output", str(out), "--image-size", "32", "--epochs", "1", "--batch-size", "3", "--workers", "0"]
    argv += ["--arm", "unet", "channel_attention=none", "spatial_attention=false", "scale_attention=false"]
    assert main([*argv, "--arm", "eca", "channel_attention=eca", "scales=2", "--seeds", "0", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Dice (%)" in printed and "vs unet (95% CI)" in printed
    result = json.loads((out / "comparison.json").read_text())
    assert [r["label"] for r in result["rows"]] == ["unet", "eca"] and result["rows"][0]["seeds"] == [0, 1]
    dice = [json.loads((out / "eca" / f"seed{s}" / "summary.json").read_text())["mDice"] for s in (0, 1)]
    assert result["rows"][1]["finals"] == dice and result["pairs"][0]["final"]["n"] == 2
    unet = load_segmenter(out / "unet" / "seed0" / "final.safetensors")
    assert unet.scale_attention is None and len(unet.gates) == 0 and unet.decoder[0].attention is None
    assert load_segmenter(out / "eca" / "seed1" / "final.safetensors").config["scales"] == 2
    assert main([*argv[:-5], "--arm", "x", "colour=red"]) == 2
    assert "--arm x: 'colour=red' is not KEY=VALUE with a segment train setting as KEY" in capsys.readouterr().err
