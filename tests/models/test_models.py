import pytest
import torch
import torchvision

from ecanet import ECA, create_model, list_models
from ecanet.layers import eca_kernel_size

IMAGENET = list_models(dataset="imagenet")
CIFAR = list_models(dataset="cifar")
ATTENTIONS = ["", "se_", "cbam_", "eca_", "ceca_", "eca_ns_"]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_zoo_names():
    for arch in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2"]:
        assert {a + arch for a in ATTENTIONS} <= set(IMAGENET)
    for depth in [20, 32, 44, 56, 110]:
        assert {f"{a}resnet{depth}" for a in ATTENTIONS} <= set(CIFAR)
    assert len(IMAGENET) == 36 and len(CIFAR) == 30


def deep_ones_slow(names: list[str]) -> list:
    """The 101- and 152-layer networks as slow cases (the same code as ResNet-50, three to five times longer)."""
    return [pytest.param(n, marks=pytest.mark.slow) if n.endswith(("resnet101", "resnet152")) else n for n in names]


@pytest.mark.parametrize("name", deep_ones_slow(IMAGENET + CIFAR))
def test_forward_backward_small_input(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "arch", deep_ones_slow(["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2"])
)
def test_names_and_shapes_equal_torchvision(arch):
    ours = create_model(arch).state_dict()
    theirs = getattr(torchvision.models, arch)().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    eca = create_model("eca_" + arch).state_dict()
    extra = set(eca) - set(theirs)
    assert set(theirs) <= set(eca) and extra and all(k.endswith("conv.weight") and eca[k].ndim == 3 for k in extra)


def test_attention_submodule_named_eca_in_resnet_blocks():
    sd = create_model("eca_resnet50").state_dict()
    assert sd["layer1.0.eca.conv.weight"].shape == (1, 1, 3)
    assert sd["layer4.2.eca.conv.weight"].shape == (1, 1, 7)
    assert "features.2.conv.4.conv.weight" in create_model("eca_mobilenet_v2").state_dict()


def test_eca_costs_80_parameters_on_resnet50():
    # k = 3, 5, 5, 7 on 3, 4, 6, 3 blocks
    assert n_params(create_model("eca_resnet50")) - n_params(create_model("resnet50")) == 3 * 3 + 4 * 5 + 6 * 5 + 3 * 7


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet18", 11_689_512),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("mobilenet_v2", 3_504_872),
        # SE: two FC layers with bias, reduction 16, in every block (SENet's SE-ResNet-50: 28.09 M)
        (
            "se_resnet50",
            25_557_032
            + sum(n * (2 * c * c // 16 + c // 16 + c) for n, c in [(3, 256), (4, 512), (6, 1024), (3, 2048)]),
        ),
    ],
)
def test_param_counts_stable(name, expected):
    assert n_params(create_model(name)) == expected


def test_torchvision_param_counts_agree():
    assert n_params(create_model("resnet50")) == n_params(torchvision.models.resnet50())
    assert n_params(create_model("mobilenet_v2")) == n_params(torchvision.models.mobilenet_v2())


def stage_ks(model):
    return [m.kernel_size for m in model.modules() if isinstance(m, ECA)]


@pytest.mark.parametrize(
    "arch, released",
    [
        ("resnet18", [3, 5, 7, 7]),
        ("resnet34", [3, 3, 5, 7]),
        ("resnet50", [3, 5, 5, 7]),
        ("resnet101", [3, 3, 5, 7]),
        ("resnet152", [3, 3, 5, 7]),
    ],
)
def test_released_kernel_sizes(arch, released):
    model = create_model("eca_" + arch)
    assert model.config["eca_k"] == released
    blocks = [len(getattr(model, f"layer{i}")) for i in range(1, 5)]
    assert stage_ks(model) == [k for k, n in zip(released, blocks) for _ in range(n)]


def test_mobilenet_released_kernel_rule_and_dropout():
    model = create_model("eca_mobilenet_v2")
    for block in model.features[1:-1]:
        eca = block.conv[-1]
        assert eca.kernel_size == (1 if block.out_channels < 96 else 3)
    assert model.classifier[0].p == 0.25


def test_adaptive_and_explicit_kernel_sizes():
    model = create_model("eca_resnet50", eca_k="adaptive")
    for m in model.modules():
        if isinstance(m, ECA):
            assert m.kernel_size == eca_kernel_size(m.channels)
    assert model.config["eca_k"] == [5, 5, 5, 7]
    assert create_model("eca_resnet18", eca_k=[1, 3, 5, 9]).config["eca_k"] == [1, 3, 5, 9]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eca_k": [3, 5, 7]}, "4 positive odd ints"),
        ({"eca_k": [3, 4, 5, 7]}, "4 positive odd ints"),
        ({"eca_k": "auto"}, "must be 'released', 'adaptive'"),
    ],
)
def test_bad_kernel_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model("eca_resnet50", **kwargs)


def test_eca_k_on_model_without_eca_is_an_error():
    with pytest.raises(ValueError, match="se_resnet50 has no ECA"):
        create_model("se_resnet50", eca_k="adaptive")


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="unknown model 'eca_resnet5'.*did you mean.*eca_resnet50"):
        create_model("eca_resnet5")


def test_default_num_classes():
    assert create_model("eca_resnet20").fc.out_features == 10
    assert create_model("eca_resnet18").fc.out_features == 1000


def test_any_input_size_and_stage_features():
    model = create_model("eca_resnet50").eval()
    feats = model.forward_stages(torch.randn(1, 3, 96, 160))
    assert [f.shape[1] for f in feats] == model.feature_channels == [256, 512, 1024, 2048]
    assert [f.shape[-2:] for f in feats] == [(24, 40), (12, 20), (6, 10), (3, 5)]
    assert model(torch.randn(1, 3, 97, 131)).shape == (1, 1000)
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))
    mnv2 = create_model("eca_mobilenet_v2").eval()
    feats = mnv2.forward_stages(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == mnv2.feature_channels == [24, 32, 96, 1280]
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]


def test_cifar_resnet_layout():
    model = create_model("eca_resnet56")
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [9, 9, 9]
    assert model.feature_channels == [16, 32, 64] and model.conv1.stride == (1, 1)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 64, 8, 8)


@pytest.mark.parametrize("name, stem", [("resnet18", ["conv1", "bn1"]), ("eca_resnet20", ["conv1", "bn1"]),
                                        ("eca_mobilenet_v2", ["features.0"])])  # fmt: skip
def test_freeze_stages_fixes_exactly_the_stem_and_first_stages(name, stem):
    for n in range(3):
        model = create_model(name)
        model.freeze_stages(n)
        want = {id(p) for s in model.stages()[:n] for p in s.parameters()}
        want |= {id(p) for m in stem for p in model.get_submodule(m).parameters()}
        assert {id(p) for p in model.parameters() if not p.requires_grad} == want, n
    with pytest.raises(ValueError, match="freeze_stages: expected 0"):
        create_model(name).freeze_stages(99)


def test_detector_trainable_layers_follow_torchvision():
    from ecanet.detection.models import resnet_fpn

    order = ["layer4", "layer3", "layer2", "layer1", "conv1"]
    for t in range(6):
        net = create_model("resnet18")
        resnet_fpn(net, t)
        train = order[:t] + (["bn1"] if t == 5 else [])
        for name, p in net.named_parameters():
            if not name.startswith("fc"):
                assert p.requires_grad == any(name.startswith(layer) for layer in train), (t, name)


def test_mobilenet_v2_kernel_size_follows_the_block_width_not_the_build_order():
    model = create_model("eca_mobilenet_v2", eca_k=[1, 3, 5, 7, 9, 11, 13])
    for stage, k in zip(model.stages(), [1, 3, 5, 7, 9, 11, 13]):
        assert {m.conv[-1].kernel_size for m in stage} == {k}


def test_stage_shapes_match_the_blocks_of_the_built_networks():
    from ecanet.models.registry import stage_shapes

    assert stage_shapes("resnet50") == [(256, 56, 3, 3), (512, 28, 4, 5), (1024, 14, 6, 5), (2048, 7, 3, 7)]
    assert stage_shapes("resnet18", 320)[0] == (64, 80, 2, 3)
    assert stage_shapes("resnet56") == [(16, 32, 9, 3), (32, 16, 9, 3), (64, 8, 9, 3)]
    # MobileNetV2: every block's output, as the built network gives it (channels, side, per stage).
    model, outputs = create_model("eca_mobilenet_v2").eval(), []
    hooks = [block.register_forward_hook(lambda m, i, o: outputs.append(o.shape)) for block in model.features[1:-1]]
    with torch.no_grad():
        model(torch.randn(1, 3, 96, 96))
    for hook in hooks:
        hook.remove()
    shapes = stage_shapes("mobilenet_v2", 96)
    assert [(c, side, side) for c, side, n, _ in shapes for _ in range(n)] == [tuple(s[1:]) for s in outputs]
    ks = [m.conv[-1].kernel_size for stage in model.stages() for m in stage]
    assert ks == [k for _, _, n, k in shapes for _ in range(n)]
