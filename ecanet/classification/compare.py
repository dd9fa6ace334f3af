"""``ecanet compare``'s runs: every model for every seed, trained the same way by the training engine.

Every run is an ordinary ``ecanet train`` run under ``OUT/<label>/seed<seed>``: a finished run (its
``summary.json`` exists) is read, not repeated; a killed one resumes from its checkpoint. So a killed
comparison continues where it stopped. Runs with the same seed share the data order (the sampler's seed)
and, where the architectures allow, the initialisation. The statistics are ``ecanet.studies.comparison``'s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from ..studies.comparison import Arm, plot_comparison, summarize, with_speed
from ..training.config import read_json
from .config import TrainConfig
from .train import train


def _run(cfg: TrainConfig, arm: Arm, seed: int, out: Path) -> dict:
    """The run's summary with its median training img/s; trained (or resumed) only if not finished."""
    run_dir = out / arm.label / f"seed{seed}"
    run = replace(cfg, model=arm.model, eca_k=arm.eca_k, seed=seed, output=str(run_dir), compare=[], resume=None)
    run = replace(run, widths=arm.widths or cfg.widths)
    if (run_dir / "summary.json").is_file():
        _check_same_settings(run, run_dir)
        return with_speed(read_json(run_dir / "summary.json", "compare"), run_dir, seed)
    resume = "" if (run_dir / "checkpoint.pt").is_file() else None
    return with_speed(train(replace(run, resume=resume)), run_dir, seed)


def _check_same_settings(run: TrainConfig, run_dir: Path) -> None:
    """A finished run is reused only if it was trained with these settings (those given: the defaults the
    engine fills in, such as the scaled lr, are not compared; nor the epochs a time budget planned)."""
    saved = read_json(run_dir / "config.json", "compare")
    differ = [
        k
        for k, v in asdict(run).items()
        if v is not None
        and k not in ("resume", "output")
        and saved.get(k) != v
        and not (k == "epochs" and run.budget_minutes)
    ]
    if differ:
        k = differ[0]
        raise ValueError(
            f"compare: {run_dir} was trained with {k}={saved.get(k)!r}, not {getattr(run, k)!r}: "
            "give another --output for other settings"
        )


def compare(cfg: TrainConfig, arms: Sequence[Arm], seeds: Sequence[int]) -> dict:
    """Train every arm for every seed (see the module docstring); returns ``summarize``'s result, also
    written to OUT/comparison.json, with OUT/comparison.png."""
    if not arms or not seeds:
        raise ValueError("compare: give at least one model and one seed")
    labels = [a.label for a in arms]
    if len(set(labels)) != len(labels):
        raise ValueError(f"compare: models appear twice: {sorted({x for x in labels if labels.count(x) > 1})}")
    out = Path(cfg.output)
    result = summarize(arms, {arm.label: [_run(cfg, arm, seed, out) for seed in seeds] for arm in arms})
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every run is distributed; one process writes
        (out / "comparison.json").write_text(json.dumps(result, indent=2))
        plot_comparison(result["rows"], out / "comparison.png")
    return result
