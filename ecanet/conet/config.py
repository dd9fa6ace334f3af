"""``ecanet search-widths``' settings: classification's training settings for every trial, and the search's."""

from __future__ import annotations

from dataclasses import dataclass

from ..classification.config import TrainConfig
from ..training.config import option


@dataclass
class SearchConfig(TrainConfig):
    """``ecanet search-widths``: the training settings of every trial, and the search's own."""

    output: str = option("runs/search", "output folder: widths.json, search.json, search.png, trial<t>/")
    trials: int = option(5, "search trials (each trains the current widths from scratch)")
    epochs_per_trial: int = option(3, "epochs per trial (at least 2: the slope needs two Ranks)")
    scale_step: float = option(0.2, "γ: a group grows or shrinks by this fraction of its width per trial")
    threshold: float = option(0.0, "δ: a group grows where its Rank Average Slope exceeds this, else shrinks")
    min_width: int = option(4, "no group shrinks below this many channels")
    max_growth: float = option(4.0, "no group grows beyond this many times its initial width")
    adaptive_k: bool = option(True, "ECA's k follows the new widths (Eq. 9); --no-adaptive-k keeps the built k")
