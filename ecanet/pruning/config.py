"""``ecanet prune``'s configuration: the classification fields (data, fine-tuning) plus the pruning ones.
Importing it needs no pruning library, so the command line builds on a base install."""

from __future__ import annotations

from dataclasses import dataclass

from ..classification.config import TrainConfig
from ..training.config import option


@dataclass
class PruneConfig(TrainConfig):
    """What to prune, how far, by which criterion, and how to recover; training fields apply to fine-tuning."""

    model: str | None = option(
        None, "zoo model of --weights (default: read from the file; an error if it holds another)"
    )
    output: str = option("runs/prune", "output folder (pruned.safetensors, summary.json, report.json)")
    weights: str | None = option(None, "the trained weights to prune")
    importance: str = option("eca", "eca | l1 | bn | taylor | random | similarity")
    fallback: str = option("l1", "ranks the groups eca / similarity have no measure for (l1 | bn | taylor | random)")
    activation: bool = option(False, "eca: score gate x mean |activation| instead of the mean gate")
    speed_up: float | None = option(None, "MACs reduction to reach, e.g. 2 (or give --ratio)")
    ratio: float | None = option(None, "fraction of every group's channels to remove, in [0, 1)")
    scope: str = option("uniform", "uniform (every group by the same fraction) | global (ranked across groups)")
    steps: int = option(1, "prune in this many steps, measuring the criterion again after each")
    round_to: int | None = option(None, "keep channel counts multiples of this")
    ignore: list[str] = option(help="layers whose channels stay (module names)", factory=list, nargs="+")
    compensate: bool = option(False, "refit the layers that lost input channels by least squares (no labels)")
    calibration_images: int = option(256, "training images the criteria and the compensation measure on")
    finetune_epochs: int = option(0, "fine-tune the pruned network this many epochs (the training flags apply)")
    compare: list[str] = option(
        help="more criteria pruned to the same target, side by side (table, comparison.json, comparison.png)",
        factory=list,
        nargs="+",
    )


# Training fields that prune sets itself (the fine-tuning run's epochs, start weights and kernel sizes).
NOT_FLAGS = {"epochs", "pretrained", "eca_k", "recipe"}
