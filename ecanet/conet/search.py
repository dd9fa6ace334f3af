"""CONet's channel-size search (Hosseini et al., ICCVW 2021, Sec. 3): trials of a few epochs each; after a
trial every searchable layer grows by γ where its Rank Average Slope exceeds δ (it was still gaining
information) and shrinks by γ where it does not; the next trial trains the new widths from scratch.

Layers that must share a width (the convolutions of a residual stage, joined by the additions; a depthwise
convolution and its neighbours) are one searchable group, found by Torch-Pruning's dependency graph as the
pruning package finds them; a group's metric is the mean Rank of the convolutions that produce its channels.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..classification.config import TrainConfig
from ..complexity import complexity
from ..models import create_model, parse_model_name
from ..models.widths import Widths, layer_widths, write_widths_file
from .config import SearchConfig
from .rank import layer_rank, rank_average_slope

log = logging.getLogger("ecanet")


@dataclass
class Group:
    """Channels that share one width: the layers whose output (``producers``) or input (``consumers``) they are."""

    name: str  # the first producing convolution
    width: int
    producers: list[str]
    members: list[tuple[str, bool, bool]]  # (layer, the group is its output channels, one channel count only)


def searchable_groups(model: nn.Module, input_size: tuple[int, ...]) -> list[Group]:
    """The coupled channel groups of ``model`` a search may resize: every group rooted at a convolution, the
    classifier's output excluded; a model without one is an error."""
    from ..pruning.graph import custom_pruners, torch_pruning, traceable

    tp = torch_pruning()
    names = {m: n for n, m in model.named_modules()}
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    example = torch.zeros(1, *input_size)
    with traceable(model.eval()):
        graph = tp.DependencyGraph().build_dependency(model, example, customized_pruners=custom_pruners())
    groups, seen = [], set()
    for group in graph.get_all_groups(ignored_layers=head, root_module_types=[nn.Conv2d]):
        members, producers = [], []
        for item in group.items:
            module, is_out = item.dep.target.module, graph.is_out_channel_pruning_fn(item.dep.handler)
            if module not in names or (module in head and is_out):
                continue
            members.append((names[module], is_out, _one_count(module)))
            if is_out and isinstance(module, nn.Conv2d):
                producers.append(names[module])
        key = frozenset(members)
        if producers and key not in seen:
            seen.add(key)
            groups.append(Group(producers[0], group.items[0].dep.target.module.out_channels, producers, members))
    if not groups:
        raise ValueError(f"search-widths: {type(model).__name__} has no searchable convolution")
    return groups


def _one_count(module: nn.Module) -> bool:
    """BatchNorm, attention and depthwise convolutions have one channel count: input and output alike."""
    from ..layers import is_attention

    depthwise = isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
    return isinstance(module, nn.BatchNorm2d) or is_attention(module) or depthwise


def group_ranks(model: nn.Module, groups: list[Group]) -> dict[str, float]:
    """Every group's Rank: the mean Rank of the convolutions producing its channels."""
    modules = dict(model.named_modules())
    return {g.name: sum(layer_rank(modules[p].weight) for p in g.producers) / len(g.producers) for g in groups}


def scaled(groups: list[Group], slopes: dict[str, float], cfg: SearchConfig, initial: dict[str, int]) -> dict[str, int]:
    """The next trial's width of every group: ×(1 + γ) where the slope exceeds δ, ×(1 - γ) elsewhere, rounded,
    within [min_width, max_growth × its initial width]."""
    new = {}
    for g in groups:
        factor = 1 + cfg.scale_step if slopes[g.name] > cfg.threshold else 1 - cfg.scale_step
        top = max(cfg.min_width, math.floor(cfg.max_growth * initial[g.name]))
        new[g.name] = min(top, max(cfg.min_width, round(g.width * factor)))
    return new


def widths_for(base: Widths, groups: list[Group], new: dict[str, int]) -> Widths:
    """``base`` (``layer_widths``) with every group's layers at the group's new width."""
    widths = {k: list(v) for k, v in base.items()}
    for g in groups:
        w = new[g.name]
        for layer, is_out, one_count in g.members:
            if layer in widths:
                widths[layer] = [w, w] if one_count else ([widths[layer][0], w] if is_out else [w, widths[layer][1]])
    return widths


def _check(cfg: SearchConfig) -> None:
    if cfg.trials < 1:
        raise ValueError(f"--trials: at least 1, got {cfg.trials}")
    if cfg.epochs_per_trial < 2:
        raise ValueError(f"--epochs-per-trial: at least 2 (the slope needs two Ranks), got {cfg.epochs_per_trial}")
    if not 0 < cfg.scale_step < 1:
        raise ValueError(f"--scale-step: γ must lie in (0, 1), got {cfg.scale_step}")
    if not -1 <= cfg.threshold <= 1:
        raise ValueError(f"--threshold: δ must lie in [-1, 1] (a Rank slope per epoch), got {cfg.threshold}")
    if cfg.min_width < 1 or cfg.max_growth < 1:
        raise ValueError(f"--min-width / --max-growth: at least 1, got {cfg.min_width} / {cfg.max_growth}")


def search_widths(cfg: SearchConfig) -> dict:
    """Run the search (see the module docstring); writes OUT/widths.json (the final configuration, for
    ``ecanet train --widths``), OUT/search.json (widths, Ranks and slopes per group per trial; params and MACs
    before and after) and OUT/search.png, and returns search.json's content. Nothing is written when the
    settings or the model are refused."""
    from ..classification import train

    _check(cfg)
    parse_model_name(cfg.model)
    out = Path(cfg.output)
    side = cfg.image_size or (16 if cfg.data is None and cfg.train_dir is None else 224)  # as ecanet train's
    size = (3, side, side)
    model = create_model(cfg.model, num_classes=cfg.num_classes or 10, eca_k=cfg.eca_k)
    groups = searchable_groups(model, size)
    base, initial = layer_widths(model), {g.name: g.width for g in groups}
    before = complexity(model, size)
    out.mkdir(parents=True, exist_ok=True)
    history, widths = [], base
    for trial in range(cfg.trials):
        trial_dir = out / f"trial{trial}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_widths_file(trial_dir / "widths.json", cfg.model, widths, cfg.adaptive_k)
        run = replace(cfg, output=str(trial_dir), epochs=cfg.epochs_per_trial, widths=str(trial_dir / "widths.json"))
        run = replace(run, compare=[], resume=None)
        ranks: list[dict[str, float]] = []
        train(_as_train_config(run), epoch_fields=lambda m, ranks=ranks: _record(ranks, m, groups))
        slopes = {g.name: rank_average_slope([r[g.name] for r in ranks]) for g in groups}
        history.append({"trial": trial, "widths": {g.name: g.width for g in groups}, "ranks": ranks, "slopes": slopes})
        new = scaled(groups, slopes, cfg, initial)
        log.info("trial %d: %s", trial, ", ".join(f"{g.name} {g.width}->{new[g.name]}" for g in groups))
        widths = widths_for(widths, groups, new)
        for g in groups:
            g.width = new[g.name]
    write_widths_file(out / "widths.json", cfg.model, widths, cfg.adaptive_k)
    after = complexity(create_model(cfg.model, num_classes=cfg.num_classes or 10, widths=out / "widths.json"), size)
    result = {
        "model": cfg.model,
        "groups": [g.name for g in groups],
        "trials": history,
        "final_widths": {g.name: g.width for g in groups},
        "params": {"before": before["params"], "after": after["params"]},
        "macs": {"before": before["macs"], "after": after["macs"]},
    }
    (out / "search.json").write_text(json.dumps(result, indent=1))
    plot_search(result, out / "search.png")
    return result


def _as_train_config(cfg: SearchConfig) -> TrainConfig:
    from dataclasses import fields

    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(cfg).items() if k in names})


def _record(ranks: list, model: nn.Module, groups: list[Group]) -> dict:
    """Each epoch: every group's Rank, kept for the slope and written to the epoch's record."""
    current = group_ranks(model, groups)
    ranks.append(current)
    return {f"rank/{k}": v for k, v in current.items()}


def plot_search(result: dict, path: Path) -> Path:
    """Each group's width (top) and mean Rank (bottom) over the trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    trials = [t["trial"] for t in result["trials"]]
    for name in result["groups"]:
        top.plot(
            trials + [len(trials)],
            [t["widths"][name] for t in result["trials"]] + [result["final_widths"][name]],
            marker="o",
            label=name,
        )
        bottom.plot(trials, [sum(r[name] for r in t["ranks"]) / len(t["ranks"]) for t in result["trials"]], marker="o")
    top.set(ylabel="channels")
    bottom.set(xlabel="trial", ylabel="Rank (mean over the trial)")
    top.legend(fontsize=6, ncol=2)
    fig.suptitle(f"CONet search on {result['model']}")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
