"""Backbones as feature extractors: features_only levels and feature_info, output stride by dilation
(against torchvision's and timm's dilated ResNets), other input channels."""

import pytest
import torch
from torchvision.models import resnet50 as tv_resnet50

from ecanet import create_model, load_checkpoint, save_weights
from ecanet.models.input_channels import adapt_input_conv
from ecanet.weights import load_state
from tests.helpers import require_extra

# (arch, input side, reductions at output stride 32)
FAMILIES = [
    ("resnet18", 64, [2, 4, 8, 16, 32]),
    ("resnet50", 64, [2, 4, 8, 16, 32]),
    ("resnet20", 32, [1, 1, 2, 4]),
    ("mobilenet_v2", 64, [2, 4, 8, 16, 32]),
]
CHANNELS = {
    "resnet18": [64, 64, 128, 256, 512],
    "resnet50": [64, 256, 512, 1024, 2048],
    "resnet20": [16, 16, 32, 64],
    "mobilenet_v2": [16, 24, 32, 96, 320],
}
ATTENTIONS = [None, "eca", "ceca", "eca_ns", "se", "cbam"]


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("attn", ATTENTIONS)
@pytest.mark.parametrize("arch, side, reductions", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_features_only_levels(arch, side, reductions, attn, output_stride):
    name = arch if attn is None else f"{attn}_{arch}"
    net = create_model(name, features_only=True, output_stride=output_stride).eval()
    expected = [min(r, output_stride) for r in reductions]
    assert net.feature_info.reduction() == expected
    assert net.feature_info.channels() == CHANNELS[arch]
    with torch.no_grad():
        maps = net(torch.randn(2, 3, side, side))
    assert [tuple(m.shape) for m in maps] == [(2, c, side // r, side // r) for c, r in zip(CHANNELS[arch], expected)]
    assert "fc" not in dict(net.named_children()) and "classifier" not in dict(net.named_children())


def test_out_indices_pick_levels_and_match_the_classifier():
    torch.manual_seed(0)
    model = create_model("eca_resnet50").eval()
    net = create_model("eca_resnet50", features_only=True, out_indices=(2, -1)).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    load_state(net, state)  # the same names as the classifier's, head left out
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stages = model.forward_stages(x)
        maps = net(x)
    info = net.feature_info
    assert info.module_name() == ["layer2", "layer4"] and info.channels(0) == 64 and len(info) == 5
    assert info.get_dicts(keys=("num_chs", "reduction")) == [
        {"num_chs": 512, "reduction": 8},
        {"num_chs": 2048, "reduction": 32},
    ]
    assert info.get_dicts(idx=1) == info[1] == {"num_chs": 256, "reduction": 4, "module": "layer1"}
    assert info.reduction([0, 1]) == [2, 4]
    torch.testing.assert_close(maps[0], stages[1])
    torch.testing.assert_close(maps[1], stages[3])
    with pytest.raises(ValueError, match="out_indices for eca_resnet50 must be distinct levels in 0..4"):
        create_model("eca_resnet50", features_only=True, out_indices=(5,))
    with pytest.raises(ValueError, match="out_indices is for features_only=True"):
        create_model("eca_resnet50", out_indices=(1,))


def test_unneeded_stages_are_left_out():
    net = create_model("eca_mobilenet_v2", features_only=True, out_indices=(0, 1))
    assert len(net.features) == 4  # stem and blocks 1-3: up to the 24-channel level
    assert sum(p.numel() for p in net.parameters()) < 50_000
    res = create_model("resnet18", features_only=True, out_indices=(1,))
    assert [n for n, _ in res.named_children()] == ["conv1", "bn1", "relu", "maxpool", "layer1"]


@pytest.mark.parametrize("output_stride, dilate", [(16, [False, False, True]), (8, [False, True, True])])
def test_bottleneck_dilation_equals_torchvision(output_stride, dilate):
    torch.manual_seed(0)
    ours = create_model("resnet50", output_stride=output_stride).eval()
    tv = tv_resnet50(replace_stride_with_dilation=dilate).eval()
    tv.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # the fused tail rounds as an affine map: equal to fp32 rounding of the sums
        torch.testing.assert_close(ours(x), tv(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            ours.forward_features(x),
            tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))))),
            atol=1e-4,
            rtol=1e-4,
        )


@pytest.mark.parametrize("output_stride", [16, 8])
def test_basic_block_dilation_equals_timm(output_stride):
    require_extra("timm")
    import timm

    torch.manual_seed(0)
    ours = create_model("resnet18", features_only=True, output_stride=output_stride).eval()
    ref = timm.create_model("resnet18", features_only=True, output_stride=output_stride).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x), strict=True):
            torch.testing.assert_close(a, b)
    assert ours.feature_info.reduction() == ref.feature_info.reduction()


def test_mobilenet_dilation_follows_the_rule():
    """The block that gives up its stride keeps the previous dilation; later depthwise convs get the new one."""
    net = create_model("eca_mobilenet_v2", output_stride=8)
    depthwise = [
        [m for m in b.conv.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1][0] for b in net.blocks()
    ]
    got = [(c.stride[0], c.dilation[0], c.padding[0]) for c in depthwise]
    # blocks 1-6 reach stride 8 as built; block 7 (the 64-channel row) gives up its stride with dilation 1,
    # then dilation 2 up to block 14 (the 160-channel row), which gives up its stride with dilation 2, then 4.
    assert got[:6] == [(1, 1, 1), (2, 1, 1), (1, 1, 1), (2, 1, 1), (1, 1, 1), (1, 1, 1)]
    assert got[6] == (1, 1, 1) and set(got[7:13]) == {(1, 2, 2)}
    assert got[13] == (1, 2, 2) and set(got[14:]) == {(1, 4, 4)}
    with pytest.raises(ValueError, match="output_stride must be one of"):
        create_model("resnet18", output_stride=4)


def test_grey_input_adapts_rgb_weights(tmp_path):
    """in_chans=1: the RGB kernels summed, so a grey image gives what the RGB network gives on (x, x, x)."""
    torch.manual_seed(0)
    rgb = create_model("eca_resnet18").eval()
    save_weights(rgb, tmp_path / "rgb.safetensors")
    grey = create_model("eca_resnet18", in_chans=1)
    load_state(grey, rgb.state_dict(), "rgb")
    grey.eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)
    again = load_checkpoint(tmp_path / "rgb.safetensors", create_model("eca_resnet18", in_chans=1)).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), grey(x))


@pytest.mark.parametrize("in_chans", [1, 4, 7])
def test_adapt_input_conv_equals_timm(in_chans):
    require_extra("timm")
    from timm.models import adapt_input_conv as timm_adapt

    w = torch.randn(8, 3, 3, 3)
    torch.testing.assert_close(adapt_input_conv(w, in_chans), timm_adapt(in_chans, w.clone()))


@pytest.mark.parametrize("name", ["eca_resnet50", "eca_mobilenet_v2", "eca_resnet20"])
def test_four_channel_features_and_round_trip(name, tmp_path):
    net = create_model(name, in_chans=4, output_stride=16).eval()
    assert net.config["in_chans"] == 4 and net.get_submodule(net.first_conv).in_channels == 4
    save_weights(net, tmp_path / "m.safetensors")
    back = load_checkpoint(tmp_path / "m.safetensors").eval()  # in_chans and output stride from the metadata
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x))
    feats = create_model(name, features_only=True, in_chans=4, out_indices=(0, 2)).eval()
    assert feats(x)[0].shape[1] == feats.feature_info.channels()[0]
    save_weights(feats, tmp_path / "f.safetensors")
    back = load_checkpoint(tmp_path / "f.safetensors").eval()  # a feature extractor comes back as one
    assert back.out_indices == (0, 2)
    with torch.no_grad():
        for a, b in zip(back(x), feats(x), strict=True):
            torch.testing.assert_close(a, b)
