"""``ecanet segment compare``: segmenters (e.g. CA-Net with and without each attention) trained alike for
several seeds, reported as ``ecanet compare`` reports classifiers: per model mean and sd of Dice and mIoU over
seeds, and the paired difference of Dice against the first model with its 95 % interval
(``ecanet.studies.comparison``'s statistics).

An arm is a label and the settings it changes (``{"channel_attention": "eca"}``); every run is an ordinary
``ecanet segment train`` run under ``OUT/<label>/seed<seed>``: a finished run is read, not repeated, a killed
one resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path

from ..complexity import complexity
from ..studies.comparison import Arm, plot_comparison, summarize, with_speed
from ..training.config import read_json
from .config import SegmentConfig
from .models import load_segmenter
from .train import train_segmenter

METRICS = ("Dice (%)", "mIoU (%)")


def parse_arm(words: Sequence[str]) -> tuple[str, dict]:
    """``["LABEL", "KEY=VALUE", ...]`` (the ``--arm`` flag's words) as (label, settings): values are JSON
    where they parse (numbers, true/false), ``none`` is None, anything else a string."""
    label, *pairs = words
    known = {f.name for f in fields(SegmentConfig)}
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in known:
            raise ValueError(f"--arm {label}: {pair!r} is not KEY=VALUE with a segment train setting as KEY")
        try:
            settings[key] = (
                None
                if value.lower() == "none"
                else json.loads(value.lower() if value.lower() in ("true", "false") else value)
            )
        except json.JSONDecodeError:
            settings[key] = value
    return label, settings


def _run(cfg: SegmentConfig, settings: Mapping, seed: int, run_dir: Path) -> dict:
    run = replace(cfg, **settings, seed=seed, output=str(run_dir), resume=None)
    if (run_dir / "summary.json").is_file():
        summary = read_json(run_dir / "summary.json", "segment compare")
    else:
        summary = train_segmenter(replace(run, resume="" if (run_dir / "checkpoint.pt").is_file() else None))
    model = load_segmenter(run_dir / "final.safetensors")
    cost = complexity(model, (model.config.get("in_chans", 3), cfg.image_size, cfg.image_size))
    return with_speed(summary, run_dir, seed) | {"macs": cost["macs"]}


def compare_segmenters(cfg: SegmentConfig, arms: Sequence[tuple[str, dict]], seeds: Sequence[int]) -> dict:
    """Train every arm for every seed; returns ``summarize``'s result over Dice (final epoch) and mIoU, also
    written to OUT/comparison.json, with OUT/comparison.png."""
    labels = [label for label, _ in arms]
    if not arms or not seeds:
        raise ValueError("segment compare: give at least one --arm and one seed")
    if len(set(labels)) != len(labels):
        raise ValueError(f"segment compare: arms appear twice: {sorted({x for x in labels if labels.count(x) > 1})}")
    out = Path(cfg.output)
    runs = {label: [_run(cfg, s, seed, out / label / f"seed{seed}") for seed in seeds] for label, s in arms}
    described = [Arm(label, ", ".join(f"{k}={v}" for k, v in s.items()) or cfg.model) for label, s in arms]
    result = summarize(described, runs, final_key="mDice", best_key="mIoU")
    if int(os.environ.get("RANK", "0")) == 0:
        (out / "comparison.json").write_text(json.dumps(result, indent=2))
        plot_comparison(result["rows"], out / "comparison.png", ylabel=METRICS[0])
    return result
