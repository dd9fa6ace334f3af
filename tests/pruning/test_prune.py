"""ecanet.prune on every family and attention: the pruned network runs, keeps its classifier, matches its
own plain formulation, reaches the requested channels and MACs, saves and loads back identical."""

import pytest
import torch

from ecanet import create_model, load_checkpoint, save_weights
from ecanet.layers import ECA
from ecanet.layers.fused import plain_formulation
from ecanet.models.widths import layer_widths
from tests.helpers import require_extra

require_extra("prune")
from ecanet.pruning import prune

ATTENTIONS = (None, "se", "cbam", "eca", "ceca", "eca_ns")
FAMILIES = (
    ("resnet20", 32),
    ("resnet18", 64),
    ("resnet50", 64),
    ("mobilenet_v2", 64),
)  # CIFAR, basic, bottleneck, MBv2
CASES = [
    pytest.param(arch if attn is None else f"{attn}_{arch}", size, marks=() if arch == "resnet20" else pytest.mark.slow)
    for arch, size in FAMILIES
    for attn in ATTENTIONS
]


def batch(size: int, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def trained_like(name: str) -> torch.nn.Module:
    """A zoo model with BatchNorm statistics from a few forward passes (so eval mode is meaningful)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    size = 32 if "20" in name else 64
    model.train()
    with torch.no_grad():
        for i in range(3):
            model(batch(size, seed=10 + i)[0])
    return model.eval()


@pytest.mark.parametrize("name,size", CASES)
def test_every_family_and_attention_prunes_and_runs_fused_equal_to_plain(name, size):
    model = trained_like(name)
    widths = layer_widths(model)
    importance = "l1" if name.startswith(("resnet", "mobilenet")) else "eca"
    pruned, report = prune(model, [batch(size)], importance, ratio=0.5)
    assert report.params_after < report.params_before and report.macs_after < report.macs_before
    head = pruned.fc if hasattr(pruned, "fc") else pruned.classifier[1]
    assert head.out_features == 10  # the classifier's output is never pruned
    x, y = batch(size, seed=1)
    pruned.eval()
    with torch.no_grad():
        fused = pruned(x)
        with plain_formulation(pruned):
            plain = pruned(x)
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)
    pruned.train()
    loss = torch.nn.functional.cross_entropy(pruned(x), y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in pruned.parameters() if p.requires_grad)
    for m in pruned.modules():  # attention modules know their new width
        if hasattr(m, "channels") and m.channels is not None:
            assert m.channels in {w[1] for w in layer_widths(pruned).values()}
    assert layer_widths(model) == widths  # the input model is left as it was


def test_ratio_zero_changes_nothing():
    model = trained_like("resnet20")
    x = batch(32)[0]
    pruned, report = prune(model, [x], "l1", ratio=0.0)
    assert report.layers == [] and report.params_after == report.params_before and report.speed_up == 1.0
    with torch.no_grad():
        assert torch.equal(pruned(x), model(x))


def test_uniform_ratio_removes_that_fraction_of_every_group():
    model = trained_like("eca_resnet20")
    pruned, report = prune(model, [batch(32)], "eca", ratio=0.5)
    widths = layer_widths(pruned)
    assert widths["conv1"][1] == 8  # stage 1 residual channels: 16 -> 8
    assert widths["layer1.0.conv1"][1] == 8 and widths["layer2.0.conv1"][1] == 16 and widths["layer3.2.conv1"][1] == 32
    assert widths["layer3.2.bn2"][1] == 32 and widths["fc"] == [32, 10]
    assert pruned.layer3[2].eca.channels == 32 and pruned.num_features == 32
    ranked = {r["name"]: r["ranked_by"] for r in report.layers}
    assert ranked["layer1.0.bn2"] == "eca"  # residual channels: scaled by ECA gates
    assert ranked["layer1.0.conv1"] == "l1"  # inner channels: no gate scales them, the fallback ranks them


def test_iterative_steps_reach_the_same_widths_as_one_shot():
    model = trained_like("resnet20")
    one, _ = prune(model, [batch(32)], "l1", ratio=0.5)
    two, report = prune(model, [batch(32)], "l1", ratio=0.5, steps=2)
    assert layer_widths(one) == layer_widths(two) and report.steps == 2


@pytest.mark.parametrize("scope", ["uniform", "global"])
def test_speed_up_target_is_reached_by_the_smallest_ratio(scope):
    model = trained_like("eca_resnet20")
    pruned, report = prune(model, [batch(32)], "eca", speed_up=2.0, scope=scope)
    assert 2.0 <= report.speed_up < 2.3
    from ecanet import complexity

    assert complexity(pruned, (3, 32, 32))["macs"] == report.macs_after
    if scope == "global":  # ranked across groups: groups lose different fractions
        fractions = {r["after"][1] / r["before"][1] for r in report.layers if r["before"][1] != r["after"][1]}
        assert len(fractions) > 1


def test_round_to_and_ignore():
    model = trained_like("resnet20")
    pruned, _ = prune(model, [batch(32)], "l1", ratio=0.3, round_to=4, ignore=["layer2.1.conv1"])
    widths = layer_widths(pruned)
    assert all(w[1] % 4 == 0 for n, w in widths.items() if n != "fc")
    assert widths["layer2.1.conv1"][1] == 32


def test_pruned_weights_load_back_identical_with_no_other_input(tmp_path):
    model = trained_like("eca_ns_resnet20")
    pruned, _ = prune(model, [batch(32)], "eca", ratio=0.4)
    path = save_weights(pruned, tmp_path / "pruned.safetensors")
    loaded = load_checkpoint(path)
    assert layer_widths(loaded) == layer_widths(pruned)
    assert loaded.config["model"] == "eca_ns_resnet20"
    for (k, a), (k2, b) in zip(pruned.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x = batch(32, seed=3)[0]
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), pruned.eval()(x))
    with pytest.raises(ValueError, match="holds eca_ns_resnet20, not eca_resnet20"):
        load_checkpoint(path, "eca_resnet20")


def test_circular_eca_graph_builds_quickly():
    """Tracing circular ECA's own padding hangs the graph builder; the detached gate keeps it to the channel path."""
    import time

    model = trained_like("ceca_resnet20")
    start = time.perf_counter()
    pruned, _ = prune(model, [batch(32)], "eca", ratio=0.5)
    assert any(isinstance(m, ECA) and m.padding == "circular" and m.channels == 8 for m in pruned.modules())
    assert time.perf_counter() - start < 120  # a hang, not a speed assertion: it takes about a second


def test_pruning_exactly_dead_channels_changes_eca_outputs_but_not_se():
    """Documented: ECA's 1-D convolution gets new neighbours when channels go, so even removing channels that
    are exactly zero changes its output a little; SE's gate of a kept channel does not read removed channels
    through a neighbourhood, and its output stays within rounding."""

    def dead_channel_error(name: str) -> float:
        model = trained_like(name)
        with torch.no_grad():
            for norm in [model.bn1, *(block.bn2 for block in model.layer1)]:
                norm.weight[1::2] = 0  # every other residual channel of stage 1 carries nothing
                norm.bias[1::2] = 0
        pruned, report = prune(model, [batch(32)], "bn", ratio=0.5, ignore=[n for n, _ in _inner(model)])
        assert report.kept["layer1.0.bn2"]["out"] == list(range(0, 16, 2))  # exactly the dead ones went
        x = batch(32, seed=5)[0]
        with torch.no_grad():
            return (pruned(x) - model(x)).abs().max().item()

    assert dead_channel_error("se_resnet20") < 1e-4
    assert dead_channel_error("eca_resnet20") > 1e-4


def _inner(model):
    """Every convolution whose output channels are a block's inner channels (kept in the test above)."""
    return [(n, m) for n, m in model.named_modules() if n.endswith("conv1") and n != "conv1"] + [
        (n, m) for n, m in model.named_modules() if n.startswith(("layer2", "layer3")) and n.endswith("conv2")
    ]


def test_models_the_pruner_cannot_handle_are_refused_in_one_line():
    from torch import nn
    from torchvision.models import resnext50_32x4d

    x = batch(32)[0]
    with pytest.raises(ValueError, match=r"cannot prune layer1\.0\.conv2: a grouped convolution \(32 groups\)"):
        prune(resnext50_32x4d(num_classes=10), [x], "l1", ratio=0.5)
    with pytest.raises(ValueError, match="no classifier"):
        prune(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), [x], "l1", ratio=0.5)
    model = trained_like("resnet20")
    with pytest.raises(ValueError, match="ignore: the model has no layer 'layer9'"):
        prune(model, [x], "l1", ratio=0.5, ignore=["layer9"])
    with pytest.raises(ValueError, match="calibration: no images"):
        prune(model, [], "l1", ratio=0.5)
    with pytest.raises(ValueError, match=r"scope \(--scope\) must be one of"):
        prune(model, [x], "l1", ratio=0.5, scope="local")


def test_bad_widths_and_calibration_size_are_one_line_errors(tmp_path):
    from safetensors.torch import save_file

    from ecanet.pruning.experiment import calibration_batches

    model = create_model("resnet20")
    meta = {"format": "pt", "ecanet.model": '"resnet20"', "ecanet.widths": '{"layer9.conv1": [3, 3]}'}
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    with pytest.raises(
        ValueError, match=r"w\.safetensors: its recorded layer widths do not fit resnet20: .*'layer9\.conv1'"
    ):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="--calibration-images must be at least 1, got 0"):
        calibration_batches([], 0, 8, 0)
