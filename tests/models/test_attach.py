import copy

import pytest
import torch
import torchvision
from torch import nn

from ecanet import ECA, attach_eca, create_model
from tests.helpers import require_extra


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_torchvision_resnet18_gets_eca_after_bn2():
    model = torchvision.models.resnet18()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = attach_eca(model)
    # adaptive k for 64/128/256/512 channels is 3/5/5/5, two blocks per stage
    assert report.params == 2 * (3 + 5 + 5 + 5) == n_params(model) - n_params(torchvision.models.resnet18())
    assert [s.block for s in report.sites][:2] == ["layer1.0", "layer1.1"]
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())
    assert state["layer2.0.eca.conv.weight"].shape == (1, 1, 5)

    block = model.layer2[0].eval()
    bn = block.bn2
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        branch = block.conv2(block.relu(block.bn1(block.conv1(x))))
        raw = torch.nn.functional.batch_norm(branch, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
        torch.testing.assert_close(bn(branch), block.eca(raw))  # the hook applies ECA to the BN output
        torch.testing.assert_close(block(x), torch.relu(block.eca(raw) + block.downsample(x)))


def test_attached_torchvision_resnet_matches_zoo_eca_resnet():
    tv = torchvision.models.resnet50()
    attach_eca(tv, kernel_size=3)
    ours = create_model("eca_resnet50", eca_k=[3, 3, 3, 3])
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tv.eval()(x), ours.eval()(x))


def test_torchvision_mobilenet_v2_gets_eca_after_projection():
    model = torchvision.models.mobilenet_v2()
    report = attach_eca(model)
    # 13 blocks of 16..96 channels take k=3, three of 160 and one of 320 take k=5
    assert report.params == 13 * 3 + 4 * 5 == 59
    assert n_params(model) - n_params(torchvision.models.mobilenet_v2()) == 59
    assert isinstance(model.features[1].conv[-1], ECA) and model.features[1].conv[-1].channels == 16
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def assert_eca_reads_the_last_norm(model: torch.nn.Module, pairs: dict) -> None:
    """Every ECA module receives exactly its block's last BatchNorm output (eval mode, computed here from
    the norm's input), and has that norm's channel count."""
    inputs, hooks = {}, []
    for eca, norm in pairs.items():
        hooks.append(norm.register_forward_pre_hook(lambda m, a, n=norm: inputs.__setitem__(n, a[0])))
        hooks.append(eca.register_forward_pre_hook(lambda m, a, e=eca: inputs.__setitem__(e, a[0])))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    for eca, norm in pairs.items():
        assert eca.channels == norm.num_features
        expected = torch.nn.functional.batch_norm(
            inputs[norm], norm.running_mean, norm.running_var, norm.weight, norm.bias, eps=norm.eps
        )
        torch.testing.assert_close(inputs[eca], expected)


def test_mobilenet_v3_resnext_wide_and_timm_get_eca_after_each_blocks_last_norm():
    require_extra("timm")
    import timm
    from torchvision.models.mobilenetv3 import InvertedResidual as V3Block
    from torchvision.models.resnet import Bottleneck

    for build in (torchvision.models.resnext50_32x4d, torchvision.models.wide_resnet50_2):
        model = build()
        report = attach_eca(model, kernel_size=3)
        blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
        assert len(report.sites) == len(blocks) == 16 and report.params == 3 * 16
        assert_eca_reads_the_last_norm(model, {b.eca: b.bn3 for b in blocks})
    model = torchvision.models.mobilenet_v3_large()
    report = attach_eca(model, kernel_size=3)
    blocks = [m for m in model.modules() if isinstance(m, V3Block) and isinstance(m.block[-1], ECA)]
    assert len(report.sites) == len(blocks) == 7 and len(report.kept) == 8  # 8 blocks keep their SE
    assert_eca_reads_the_last_norm(model, {b.block[-1]: b.block[-2][1] for b in blocks})
    model = timm.create_model("resnet18")
    attach_eca(model)  # timm's blocks take attention in their se slot, applied after bn2
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 8 and all(isinstance(b.se, ECA) for b in blocks)
    assert_eca_reads_the_last_norm(model, {b.se: b.bn2 for b in blocks})


def test_own_plain_model_and_variants():
    model = create_model("resnet20")
    report = attach_eca(model, padding="circular", shared=False)
    assert len(report.sites) == 9 and model.layer1[0].eca.padding == "circular"
    assert report.params == 3 * (16 + 32 + 64) * 3
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    assert model.layer1[0].eca.conv.weight.grad is not None


def test_deepcopy_keeps_hook_bound_to_copied_module():
    model = torchvision.models.resnet18()
    attach_eca(model)
    clone = copy.deepcopy(model)
    hook = next(iter(clone.layer1[0].bn2._forward_hooks.values()))
    assert hook.attention is clone.layer1[0].eca


def test_unsupported_model_and_double_attach_are_errors():
    with pytest.raises(ValueError, match="AlexNet has no supported block"):
        attach_eca(torchvision.models.alexnet())
    model = torchvision.models.resnet18()
    attach_eca(model)
    with pytest.raises(ValueError, match="'layer1.0' .*already has ECA"):
        attach_eca(model)
    with pytest.raises(ValueError, match=r"every supported block already has attention \(9; replace_se swaps"):
        attach_eca(create_model("se_resnet20"))


class Neck(nn.Module):
    """A block without out_channels: its width is found by a forward."""

    def __init__(self, c):
        super().__init__()
        self.cv1, self.cv2 = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.cv2(self.cv1(x)) + x


class Custom(nn.Module):
    """A YOLO-like net: a backbone of conv stages and a neck."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.SiLU()),
            nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.SiLU()),
        )
        self.neck = Neck(16)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.head(self.neck(self.backbone(x)))


def test_attach_by_name_puts_eca_after_each_matched_module():
    torch.manual_seed(0)
    model = Custom()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    report = attach_eca(model, where=["backbone.*.0", "neck"], input_size=(3, 32, 32))
    assert [(s.block, s.channels) for s in report.sites] == [("backbone.0.0", 8), ("backbone.1.0", 16), ("neck", 16)]
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())  # every tensor keeps its name and value
    assert set(state) - set(before) == {
        "backbone.0.0.eca.conv.weight",
        "backbone.1.0.eca.conv.weight",
        "neck.eca.conv.weight",
    }
    model.eval()
    with torch.no_grad():  # by value: each ECA reads the output of the module it was attached to
        for conv, inp in ((model.backbone[0][0], x), (model.backbone[1][0], model.backbone[0](x))):
            raw = nn.functional.conv2d(inp, conv.weight, conv.bias, conv.stride, conv.padding)
            torch.testing.assert_close(conv(inp), conv.eca(raw))
        h = model.backbone(x)
        neck = model.neck
        torch.testing.assert_close(neck(h), neck.eca(neck.cv2(neck.cv1(h)) + h))
    model.train()(x).sum().backward()
    assert model.neck.eca.conv.weight.grad is not None


def test_attach_by_name_appends_to_a_sequential_and_refuses_twice():
    model = Custom()
    report = attach_eca(model, where=["backbone.1"], input_size=(3, 32, 32))
    assert isinstance(model.backbone[1][-1], ECA) and report.sites[0].channels == 16
    with pytest.raises(ValueError, match=r"attach_eca: 'backbone.1' already has ECA"):
        attach_eca(model, where=["backbone.1"], input_size=(3, 32, 32))


def test_attach_by_name_errors_name_the_pattern():
    with pytest.raises(ValueError, match=r"^attach_eca: where= pattern 'neck.cv9' matches no module of Custom$"):
        attach_eca(Custom(), where=["neck", "neck.cv9"])
    with pytest.raises(ValueError, match=r"name where ECA goes with where=\[\.\.\.\]"):
        attach_eca(Custom())
