"""Each criterion ranks a planted useless (or duplicate) channel last, on a real dependency group."""

import pytest
import torch

from ecanet import create_model
from tests.helpers import require_extra

require_extra("prune")
import torch_pruning as tp

from ecanet.pruning import create_criterion, prune
from ecanet.pruning.calibration import as_batches
from ecanet.pruning.graph import custom_pruners, traceable
from ecanet.pruning.importance import redundancy_scores

PLANTED = 5


def images(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def group_scores(model, criterion_name: str, root, **kwargs) -> torch.Tensor:
    """The criterion's scores of the group whose root is ``root``'s output channels."""
    batches = as_batches([images()])
    criterion = create_criterion(criterion_name, **kwargs)
    criterion.prepare(model, batches)
    criterion.bind(model)
    with traceable(model):
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=batches[0][0][:1], customized_pruners=custom_pruners()
        )
    group = graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs=list(range(root.out_channels)))
    return criterion(group), criterion


def useless_inner_channel(attn: str = "eca"):
    """eca_resnet20 whose block layer1.0 has an inner channel that contributes nothing: zero filter, zero
    BatchNorm scale and shift, zero weights reading it."""
    torch.manual_seed(0)
    model = create_model(f"{attn}_resnet20", num_classes=10).eval()
    block = model.layer1[0]
    with torch.no_grad():
        block.conv1.weight[PLANTED] = 0
        block.bn1.weight[PLANTED] = 0
        block.bn1.bias[PLANTED] = 0
        block.conv2.weight[:, PLANTED] = 0
    return model, block.conv1


@pytest.mark.parametrize("name", ["l1", "bn", "taylor", "similarity", "eca"])
def test_a_useless_inner_channel_is_ranked_last(name):
    model, root = useless_inner_channel()
    scores, criterion = group_scores(model, name, root)
    assert scores.shape == (16,)
    assert int(scores.argmin()) == PLANTED
    assert scores.mean().item() == pytest.approx(1.0, rel=1e-5)  # normalised per group
    # eca has no gate over inner channels: its fallback ranked them, and says so
    assert criterion.ranked_by["layer1.0.conv1"] == ("l1" if name == "eca" else name)


@pytest.mark.parametrize("attn", ["eca", "se", "cbam"])
def test_eca_ranks_the_channel_its_gates_close_last(attn):
    torch.manual_seed(0)
    model = create_model(f"{attn}_resnet20", num_classes=10).eval()
    with torch.no_grad():
        for block in model.layer1:
            if attn == "eca":
                block.eca.conv.weight.copy_(torch.tensor([0.0, 5.0, 0.0]).view(1, 1, 3))
            block.bn2.bias[PLANTED] = -10.0  # the pooled value of the channel is about -10
            if attn == "se":  # the gate of channel PLANTED reads its own pooled value, strongly
                block.se.fc2.weight.zero_()
                block.se.fc2.bias.zero_()
                block.se.fc2.bias[PLANTED] = -20.0
            if attn == "cbam":
                mlp = block.cbam.channel_mlp[2]
                mlp.weight.zero_()
                mlp.bias.zero_()
                mlp.bias[PLANTED] = -20.0
    scores, criterion = group_scores(model, "eca", model.conv1)  # the residual channels of stage 1
    assert int(scores.argmin()) == PLANTED and criterion.ranked_by["conv1"] == "eca"
    assert scores[PLANTED] < 0.01 * scores.max()


def test_eca_with_activation_scores_gate_times_mean_magnitude():
    torch.manual_seed(0)
    model = create_model("eca_resnet20", num_classes=10).eval()
    x = images()[0]
    gate_only, _ = group_scores(model, "eca", model.conv1)
    weighted, _ = group_scores(model, "eca", model.conv1, activation=True)
    assert not torch.allclose(gate_only, weighted)
    # by hand: the mean over the stage's ECA modules of mean_n,hw |eca(x)|, normalised by its mean
    seen = []
    hooks = [b.eca.register_forward_hook(lambda m, a, o: seen.append(o.abs().mean((0, 2, 3)))) for b in model.layer1]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    expected = torch.stack(seen).mean(0)
    torch.testing.assert_close(weighted, expected / expected.mean(), rtol=1e-4, atol=1e-6)


def test_similarity_keeps_one_of_two_duplicate_channels():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10).eval()
    conv = model.layer1[0].conv1
    with torch.no_grad():
        conv.weight[PLANTED] = 0.5 * conv.weight[2]  # a weaker copy of channel 2
    scores, _ = group_scores(model, "similarity", conv)
    assert int(scores.argmin()) == PLANTED
    assert scores[PLANTED] < 1e-6 < 0.5 < scores[2]  # the copy goes first; the stronger original scores as usual


def test_redundancy_scores_by_hand():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = torch.tensor([4.0, 1.0, 3.0, 2.0])
    features = torch.stack([a, 3 * a + 1, b, torch.zeros(4)])  # 1 copies 0 (and is stronger), 3 is constant
    scores = redundancy_scores(features)
    corr_ab = torch.corrcoef(torch.stack([a, b]))[0, 1].abs()
    # order by strength: 1 (std of 3a), 2 (b, same std as a), 0 (a), 3 (constant)
    torch.testing.assert_close(
        scores, torch.stack([torch.tensor(0.0), torch.tensor(1.0), 1 - corr_ab, torch.tensor(0.0)])
    )


def test_random_is_seeded():
    model, root = useless_inner_channel()
    a, _ = group_scores(model, "random", root, seed=1)
    b, _ = group_scores(model, "random", root, seed=1)
    c, _ = group_scores(model, "random", root, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_criterion_errors():
    with pytest.raises(ValueError, match="unknown importance 'magic'; choose one of eca, l1"):
        create_criterion("magic")
    with pytest.raises(ValueError, match="fallback must be a weight-based criterion"):
        create_criterion("eca", fallback="similarity")
    model = create_model("resnet20")
    with pytest.raises(ValueError, match="importance 'eca' needs a model with channel attention"):
        prune(model, images()[0], "eca", ratio=0.5)
    with pytest.raises(ValueError, match="taylor criterion needs labelled batches"):
        prune(model, images()[0], "taylor", ratio=0.5)
