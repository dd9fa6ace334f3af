"""CONet: EVBMF finds a planted rank under noise, a layer's Rank grows as it learns a low-rank map, the search
groups the layers that share a width, scales them by γ within bounds, writes a widths file that
``create_model(widths=...)`` and ``ecanet train --widths`` build, and refuses bad settings in one line with
nothing written."""

import json

import pytest
import torch
from torch import nn

from ecanet import create_model, load_checkpoint, save_weights
from ecanet.cli import main
from ecanet.conet import SearchConfig, evbmf_rank, layer_rank, rank_average_slope, searchable_groups
from ecanet.conet.search import scaled, widths_for
from ecanet.models.widths import layer_widths, write_widths_file
from tests.helpers import require_extra


@pytest.mark.parametrize("shape,rank,noise", [((64, 576), 5, 0.1), ((128, 1152), 40, 0.05), ((64, 64), 10, 0.1),
                                              ((300, 40), 7, 0.2), ((32, 288), 0, 1.0)])  # fmt: skip
def test_evbmf_finds_the_planted_rank(shape, rank, noise):
    g = torch.Generator().manual_seed(0)
    L, M = shape
    signal = torch.randn(L, rank, generator=g) @ torch.randn(rank, M, generator=g) / max(rank, 1) ** 0.5
    assert evbmf_rank(signal + noise * torch.randn(L, M, generator=g)) == rank


def test_rank_is_normalised_and_grows_as_a_layer_learns():
    """A 1x1 convolution fitted to a rank-4 map: its Rank goes from 0 (noise at initialisation) to 4/32."""
    torch.manual_seed(0)
    conv = nn.Conv2d(48, 32, 1, bias=False)
    target = torch.randn(32, 4) @ torch.randn(4, 48) / 2
    opt = torch.optim.SGD(conv.parameters(), lr=0.5)
    ranks = [layer_rank(conv.weight)]
    for _ in range(4):
        for _ in range(25):
            x = torch.randn(64, 48, 1, 1)
            loss = ((conv(x).flatten(1) - x.flatten(1) @ target.T) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        ranks.append(layer_rank(conv.weight))
    assert ranks[0] == 0.0 and ranks[-1] == 4 / 32 and all(0 <= r <= 1 for r in ranks)
    assert rank_average_slope(ranks) == (ranks[-1] - ranks[0]) / 4 > 0
    with pytest.raises(ValueError, match="needs the Rank of at least 2 epochs"):
        rank_average_slope([0.5])


def test_groups_are_the_layers_that_share_a_width():
    require_extra("prune")
    groups = {g.name: g for g in searchable_groups(create_model("eca_resnet20"), (3, 32, 32))}
    assert len(groups) == 3 + 9  # a group per residual stage, and each block's inner width
    stage3 = groups["layer3.0.downsample.0"]
    assert stage3.width == 64 and set(stage3.producers) == {f"layer3.{i}.conv2" for i in range(3)} | {
        "layer3.0.downsample.0"
    }
    assert ("layer3.0.eca", True, True) in stage3.members and ("fc", False, False) in stage3.members
    assert groups["layer2.1.conv1"].producers == ["layer2.1.conv1"]
    mobile = searchable_groups(create_model("eca_mobilenet_v2"), (3, 32, 32))
    depthwise = next(g for g in mobile if g.name == "features.2.conv.1.0")  # the depthwise conv and its expansion
    assert depthwise.producers == ["features.2.conv.1.0", "features.2.conv.0.0"] and depthwise.width == 96
    with pytest.raises(ValueError, match=r"^search-widths: Sequential has no searchable convolution$"):
        searchable_groups(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), (3, 2, 2))


def test_scaling_within_bounds_and_a_model_with_the_new_widths(tmp_path):
    require_extra("prune")
    model = create_model("eca_resnet20", num_classes=10)
    groups = searchable_groups(model, (3, 32, 32))
    cfg = SearchConfig(model="eca_resnet20", scale_step=0.5, threshold=0.01, min_width=12, max_growth=1.2)
    slopes = {g.name: 0.02 if "layer3" in g.name else 0.0 for g in groups}
    new = scaled(groups, slopes, cfg, {g.name: g.width for g in groups})
    assert new["layer3.0.downsample.0"] == 76  # 64 x 1.5 = 96, held to 1.2 x 64
    assert new["layer2.0.downsample.0"] == 16 and new["conv1"] == 12  # 32 x 0.5; 16 x 0.5 = 8, held to 12
    widths = widths_for(layer_widths(model), groups, new)
    write_widths_file(tmp_path / "w.json", "eca_resnet20", widths, adaptive_k=True)
    built = create_model("eca_resnet20", num_classes=10, widths=tmp_path / "w.json")
    assert layer_widths(built) == widths
    assert built.layer3[0].eca.kernel_size == 3 and built.config["eca_k"] == [3, 3, 3]  # psi(76) = 3
    built(torch.randn(2, 3, 32, 32)).sum().backward()
    save_weights(built, tmp_path / "b.safetensors")
    again = load_checkpoint(tmp_path / "b.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), built.state_dict().values()))
    with pytest.raises(ValueError, match=r"w.json holds the widths of eca_resnet20, not eca_resnet56$"):
        create_model("eca_resnet56", widths=tmp_path / "w.json")


@pytest.mark.slow
def test_search_widths_end_to_end_then_train_the_found_network(tmp_path, capsys):
    require_extra("prune")
    out = tmp_path / "search"
    argv = ["search-widths", "--model", "resnet20", "--trials", "2", "--epochs-per-trial", "2", "--output", str(out)]
    assert main([*argv, "--batch-size", "64", "--scale-step", "0.25", "--threshold", "-0.5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    result = json.loads((out / "search.json").read_text())
    assert [t["trial"] for t in result["trials"]] == [0, 1] and (out / "search.png").is_file()
    assert all(len(t["ranks"]) == 2 for t in result["trials"])  # a Rank per group per epoch
    records = [json.loads(line) for line in (out / "trial0" / "metrics.jsonl").read_text().splitlines()]
    assert all(f"rank/{name}" in r for r in records for name in result["groups"])
    # δ = -0.5 lies below every slope: every group grows by a quarter, twice
    assert printed["final_widths"]["layer3.0.downsample.0"] == round(round(64 * 1.25) * 1.25) == 100
    assert printed["params"]["after"] > printed["params"]["before"]
    cmp = tmp_path / "cmp"
    argv = ["compare", "--models", "resnet20", f"resnet20@{out / 'widths.json'}", "--seeds", "2", "--epochs", "1"]
    assert main([*argv, "--batch-size", "64", "--output", str(cmp)]) == 0
    rows = json.loads((cmp / "comparison.json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["resnet20", "resnet20@widths"] and rows[1]["params"] > rows[0]["params"]
    found = load_checkpoint(cmp / "resnet20@widths" / "seed1" / "final.safetensors")
    assert found.layer3[0].conv2.out_channels == 100


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--scale-step", "1.5"], r"--scale-step: γ must lie in \(0, 1\), got 1.5"),
        (["--threshold", "3"], r"--threshold: δ must lie in \[-1, 1\]"),
        (["--epochs-per-trial", "1"], r"--epochs-per-trial: at least 2"),
    ],
)
def test_bad_settings_are_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "never"
    assert main(["search-widths", "--model", "resnet20", "--output", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err) and not out.exists()


def test_a_widths_file_for_another_model_is_one_line_and_writes_nothing(tmp_path, capsys):
    write_widths_file(tmp_path / "w.json", "resnet56", layer_widths(create_model("resnet56")), adaptive_k=False)
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--widths", str(tmp_path / "w.json"), "--output", str(out)]) == 2
    assert "holds the widths of resnet56, not resnet20" in capsys.readouterr().err and not out.exists()


def test_compare_with_a_missing_widths_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--models", "resnet20", "resnet20@nope.json", "--output", str(out)]) == 2
    assert "--models resnet20@nope.json: no widths file nope.json" in capsys.readouterr().err and not out.exists()
