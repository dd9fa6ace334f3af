"""``replace_se``: every SE module of torchvision's, timm's and ecanet's models becomes an ECA over the same
channels at the same name, with the gate's kind; everything else keeps its name and value."""

import pytest
import torch
import torchvision
from torch import nn

from ecanet import ECA, create_model, replace_se
from ecanet.adapt.replace_se import is_squeeze_excitation


def check_swap(model, x, sites, hard):
    """Replace, then: the site count and kinds, SE gone, other tensors unchanged, the parameter delta as
    reported, output shape, forward and backward."""
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    se_names = [n for n, m in model.named_modules() if n and is_squeeze_excitation(m)]
    with torch.no_grad():
        shape = model(x).shape
    params_before = sum(p.numel() for p in model.parameters())
    report = replace_se(model)
    assert len(report.swaps) == sites == len(se_names)
    assert [s.name for s in report.swaps] == se_names
    assert not any(is_squeeze_excitation(m) for m in model.modules())
    for s in report.swaps:
        eca = model.get_submodule(s.name)
        assert isinstance(eca, ECA) and eca.channels == s.channels and eca.gate_name == s.gate
        assert s.added == s.kernel_size
    assert {s.gate for s in report.swaps} == {"hard_sigmoid" if hard else "sigmoid"}
    after = model.state_dict()
    se_prefixes = tuple(n + "." for n in se_names)
    kept = {k for k in before if not k.startswith(se_prefixes)}
    assert kept == {k for k in after if not k.startswith(se_prefixes)}
    for k in kept:
        assert torch.equal(before[k], after[k]), k
    assert {k for k in after if k.startswith(se_prefixes)} == {n + ".conv.weight" for n in se_names}
    assert sum(p.numel() for p in model.parameters()) == params_before - report.removed + report.added
    out = model.train()(x)
    assert out.shape == shape
    out.sum().backward()
    assert all(model.get_submodule(n).conv.weight.grad is not None for n in se_names)
    assert f"{sites} SE modules replaced" in str(report)


@pytest.mark.parametrize(
    "name,sites,hard",
    [("efficientnet_b0", 16, False), ("mobilenet_v3_small", 9, True), ("regnet_y_400mf", 16, False)],
)
def test_torchvision_models(name, sites, hard):
    torch.manual_seed(0)
    check_swap(getattr(torchvision.models, name)(), torch.randn(2, 3, 64, 64), sites, hard)


@pytest.mark.parametrize(
    "name,sites,hard",
    [
        ("efficientnet_b0", 16, False),
        ("mobilenetv3_small_100", 9, True),
        ("regnety_002", 13, False),
        ("rexnet_100", 13, False),
        ("ghostnet_100", 7, True),
        ("seresnet18", 8, False),
    ],
)
def test_timm_models(name, sites, hard):
    timm = pytest.importorskip("timm", reason='needs the "timm" extra')
    torch.manual_seed(0)
    check_swap(timm.create_model(name, pretrained=False), torch.randn(2, 3, 64, 64), sites, hard)


def test_ecanet_se_model_becomes_eca_at_the_same_place():
    torch.manual_seed(0)
    model = create_model("se_resnet20", num_classes=10)
    check_swap(model, torch.randn(2, 3, 32, 32), 9, False)
    assert isinstance(model.layer1[0].se, ECA) and model.layer1[0].se.kernel_size == 3  # psi(16), Eq. 9


def test_given_kernel_size_and_value_of_the_new_gate():
    """The swapped module computes the paper's ECA: its output equals x * sigmoid(conv1d(GAP(x)))."""
    model = torchvision.models.mobilenet_v3_small()
    replace_se(model, kernel_size=5)
    eca = model.features[1].block[1]
    assert isinstance(eca, ECA) and eca.kernel_size == 5
    x = torch.randn(2, eca.channels, 7, 7)
    pooled = x.mean((2, 3))
    expected = x * nn.functional.hardsigmoid(eca.conv(pooled.unsqueeze(1)).squeeze(1))[:, :, None, None]
    torch.testing.assert_close(eca(x), expected)


def test_a_model_without_se_is_one_line():
    with pytest.raises(ValueError, match=r"^replace_se: ResNet has no squeeze-and-excitation module \("):
        replace_se(torchvision.models.resnet18())
