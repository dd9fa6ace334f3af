"""``attach_eca`` by family and the sweep over every torchvision classification builder and a list of timm
families: each attaches, swaps SE (``replace_se``) or refuses in one line, as docs/weights.md's table says; where
ECA goes is checked by value (it reads the norm the paper's rule names, and zeroing it removes the branch)."""

import warnings

import pytest
import torch
import torchvision
from torch import nn

from ecanet import ECA, attach_eca, replace_se
from tests.helpers import require_extra

# docs/weights.md "ECA in any CNN": builder-name prefixes that attach_eca / replace_se take.
ATTACHES = ("convnext", "densenet", "mobilenet_v2", "mobilenet_v3", "regnet_x", "resnet", "resnext", "wide_resnet",
            "shufflenet", "vgg")  # fmt: skip
REPLACES = ("efficientnet", "maxvit", "mobilenet_v3", "regnet_y")
TV_BUILDERS = torchvision.models.list_models(module=torchvision.models)


def build_tv(name: str) -> nn.Module:
    """On the meta device (no memory, no init time), except RegNet, whose builder reads tensor values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # googlenet / inception_v3 init notices
        if name.startswith("regnet"):
            return torchvision.models.get_model(name, weights=None)
        with torch.device("meta"):
            return torchvision.models.get_model(name, weights=None)


def one_line_error(fn, model) -> str:
    with pytest.raises(ValueError) as e:
        fn(model)
    msg = str(e.value)
    assert "\n" not in msg and type(model).__name__ in msg
    return msg


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", TV_BUILDERS)
def test_every_torchvision_builder_attaches_swaps_or_refuses_in_one_line(name):
    model = build_tv(name)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    before = n_params(model)
    if name.startswith(ATTACHES):
        report = attach_eca(model)
        assert report.sites and n_params(model) == before + report.params
        assert all(isinstance(m, ECA) for m in model.modules() if type(m).__name__ == "ECA")
        assert len([m for m in model.modules() if isinstance(m, ECA)]) == len(report.sites)
        after = model.state_dict()
        assert all(after[k].shape == s for k, s in shapes.items())  # every tensor keeps its name
        assert all(k.endswith("conv.weight") for k in set(after) - set(shapes))
        if model.parameters().__next__().is_meta:  # shape and a backward pass, at no cost
            out = model.train()(torch.randn(2, 3, 224, 224, device="meta"))
            assert out.shape == (2, 1000)
            out.sum().backward()
    else:
        msg = one_line_error(attach_eca, model)
        assert "replace_se" in msg
    if name.startswith(REPLACES):
        report = replace_se(build_tv(name))
        assert report.swaps and report.added < report.removed
    else:
        one_line_error(replace_se, build_tv(name))


def zero_eca(model: nn.Module) -> None:
    """Make every ECA output zeros: the branch it sits on then contributes nothing."""
    for m in model.modules():
        if isinstance(m, ECA):
            m.forward = lambda x: torch.zeros_like(x)


def eca_inputs(model: nn.Module, x: torch.Tensor, reads: dict) -> None:
    """Every ECA of ``reads`` (ECA -> the module whose output the rule says it reads, hooked before ECA
    was attached) receives exactly that output (eval mode); NHWC outputs are compared as NCHW."""
    seen = {}
    hooks = [e.register_forward_pre_hook(lambda m, a: seen.__setitem__(m, a[0])) for e in reads]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    for eca, captured in reads.items():
        out = captured["out"]
        torch.testing.assert_close(seen[eca], out.permute(0, 3, 1, 2) if captured.get("nhwc") else out)


def capture(module: nn.Module, nhwc: bool = False) -> dict:
    """The output of ``module`` from a hook registered now (so it runs before any hook attach_eca adds)."""
    box = {"nhwc": nhwc}
    module.register_forward_hook(lambda m, a, out: box.__setitem__("out", out))
    return box


def tv_cases():
    from torchvision.models import convnext, densenet, regnet, shufflenetv2

    def cn(model):  # ConvNeXt: reads the block's NCHW output before layer scale; zeroed, the block is identity
        blocks = [m for m in model.modules() if isinstance(m, convnext.CNBlock)]
        return blocks, {b: capture(b.block[-1]) for b in blocks}, lambda b, x: x

    def dn(model):  # DenseNet: each dense layer's new features
        layers = [m for m in model.modules() if isinstance(m, densenet._DenseLayer)]
        return layers, {b: capture(b.conv2) for b in layers}, lambda b, x: torch.zeros(x.shape[0], 32, *x.shape[2:])

    def rx(model):  # RegNetX: after the branch's last norm, before the addition
        blocks = [m for m in model.modules() if isinstance(m, regnet.ResBottleneckBlock)]
        expect = lambda b, x: b.activation(b.proj(x) if b.proj is not None else x)  # noqa: E731
        return blocks, {b: capture(b.f.c) for b in blocks}, expect

    def sh(model):  # ShuffleNetV2: after branch2's last norm (before its ReLU)
        blocks = [m for m in model.modules() if isinstance(m, shufflenetv2.InvertedResidual)]
        return blocks, {b: capture(b.branch2[-2]) for b in blocks}, None

    def vgg(model):  # VGG: each stage's last BatchNorm; zeroed, the stage's output is zero
        f = model.features
        stages = [f[i] for i in (1, 5, 12, 19, 26)]
        return stages, {s: capture(s) for s in stages}, None

    return [
        ("convnext_tiny", cn, 18),
        ("densenet121", dn, 58),
        ("regnet_x_400mf", rx, 22),
        ("shufflenet_v2_x0_5", sh, 16),
        ("vgg11_bn", vgg, 5),
    ]


@pytest.mark.parametrize("name,case,sites", tv_cases(), ids=[c[0] for c in tv_cases()])
def test_torchvision_family_takes_eca_where_the_rule_says(name, case, sites):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=7)
    x = torch.randn(2, 3, 64, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model.eval()(x)
    holders, captured, zeroed = case(model)
    params = n_params(model)
    report = attach_eca(model)
    assert len(report.sites) == sites == len(holders)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert n_params(model) == params + report.params
    eca_of = {h: (h.eca if hasattr(h, "eca") else next(m for m in h.modules() if isinstance(m, ECA))) for h in holders}
    eca_inputs(model, x, {eca_of[h]: captured[h] for h in holders})
    with torch.no_grad():
        assert model.eval()(x).shape == reference.shape
    model.train()(x).sum().backward()
    assert all(e.conv.weight.grad is not None for e in eca_of.values())
    if zeroed is not None:  # ECA sits on the branch, before the addition
        zero_eca(model)
        with torch.no_grad():
            for h in holders[:3]:
                inp = torch.randn(1, h_in(h), 8, 8)
                torch.testing.assert_close(h.eval()(inp), zeroed(h, inp))


def h_in(block: nn.Module) -> int:
    first = next(m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)))
    return first.in_channels if isinstance(first, nn.Conv2d) else first.num_features


TIMM = [  # (name, kwargs, outcome: "attach" sites / "replace" / "refuse")
    ("resnet18", {}, ("attach", 8)),
    ("resnext50_32x4d", {}, ("attach", 16)),
    ("wide_resnet50_2", {}, ("attach", 16)),
    ("mobilenetv2_100", {}, ("attach", 16)),
    ("mobilenetv3_small_100", {}, ("replace", 9)),
    ("efficientnet_b0", {}, ("replace", 16)),
    ("convnext_atto", {}, ("attach", 12)),
    ("convnext_atto", {"conv_mlp": False}, ("attach", 12)),
    ("regnetx_002", {}, ("attach", 13)),
    ("regnety_002", {}, ("replace", 13)),
    ("densenet121", {}, ("attach", 58)),
    ("vgg11_bn", {}, ("attach", 5)),
    ("cspresnet50", {}, ("attach", 13)),
    ("cspdarknet53", {}, ("attach", 23)),
    ("ghostnet_100", {}, ("replace", 7)),
    ("rexnet_100", {}, ("replace", 13)),
]


@pytest.mark.parametrize("name,kwargs,outcome", TIMM, ids=[f"{n}{'-nhwc' if k else ''}" for n, k, _ in TIMM])
def test_timm_family_attaches_or_swaps(name, kwargs, outcome):
    require_extra("timm")
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=5, **kwargs)
    x = torch.randn(2, 3, 64, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model.eval()(x)
    kind, sites = outcome
    if kind == "attach":
        report = attach_eca(model)
        assert len(report.sites) == sites
        assert (
            n_params(model)
            == sum(p.numel() for k, p in before.items() if k in dict(model.named_parameters())) + report.params
        )
    else:
        try:  # SE in every block: refused, naming the way out; in some: those blocks keep it
            assert attach_eca(model).kept
        except ValueError as e:
            assert "replace_se" in str(e)
        model = timm.create_model(name, pretrained=False, num_classes=5, **kwargs)
        model.load_state_dict(before)
        assert len(replace_se(model).swaps) == sites
    after = model.state_dict()
    if kind == "attach":
        assert all(torch.equal(after[k], v) for k, v in before.items())
    with torch.no_grad():
        assert model.eval()(x).shape == reference.shape
    model.train()(x).sum().backward()
    assert all(m.conv.weight.grad is not None for m in model.modules() if isinstance(m, ECA))


def test_timm_positions_by_value():
    """timm: ECA reads the norm the rule names — ConvNeXt's MLP output (NHWC too), RegNetX's conv3, the CSP
    bottleneck's conv3 (its attn3 slot), Darknet's conv2, DenseNet's conv2, MobileNetV2's bn3."""
    require_extra("timm")
    import timm

    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    cases = [
        ("convnext_atto", {"conv_mlp": False}, "ConvNeXtBlock", lambda b: capture(b.mlp, nhwc=True)),
        ("convnext_atto", {}, "ConvNeXtBlock", lambda b: capture(b.mlp)),
        ("regnetx_002", {}, "Bottleneck", lambda b: capture(b.conv3)),
        ("cspresnet50", {}, "BottleneckBlock", lambda b: capture(b.conv3)),
        ("cspdarknet53", {}, "DarkBlock", lambda b: capture(b.conv2)),
        ("densenet121", {}, "DenseLayer", lambda b: capture(b)),
        ("mobilenetv2_100", {}, "InvertedResidual", lambda b: capture(b.bn3)),
    ]
    for name, kwargs, block, rule in cases:
        model = timm.create_model(name, pretrained=False, **kwargs)
        blocks = [m for m in model.modules() if type(m).__name__ == block]
        captured = {b: rule(b) for b in blocks}
        attach_eca(model)
        ecas = {b: getattr(b, "eca", None) or getattr(b, "attn3", None) for b in blocks}
        assert all(isinstance(e, ECA) for e in ecas.values()), name
        eca_inputs(model, x, {ecas[b]: captured[b] for b in blocks})


def test_a_model_whose_blocks_all_carry_se_is_refused_with_the_way_out():
    msg = one_line_error(attach_eca, torchvision.models.regnet_y_400mf())
    assert "every supported block already has attention (16; replace_se swaps SE for ECA)" in msg
    model = torchvision.models.mobilenet_v3_small()  # SE in 9 of 11 blocks: those keep it
    report = attach_eca(model)
    assert len(report.sites) == 2 and len(report.kept) == 9 and "9 blocks keep their own attention" in str(report)
