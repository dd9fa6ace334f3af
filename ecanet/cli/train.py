"""``ecanet train``: train a classifier, by default on the embedded digits next to its baselines."""

from __future__ import annotations

import argparse
import json

from ..classification.config import TrainConfig
from .flags import add_config_flags, config_values


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a classifier (default: the embedded digits dataset)")
    add_config_flags(p, TrainConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..classification import train
    from ..classification.config import resolve
    from ..models import parse_model_name
    from ..studies.comparison import format_comparison

    cfg = resolve(config_file=args.config, **config_values(args, TrainConfig))
    if cfg.data is None and cfg.train_dir is None and args.compare is None and ":" not in cfg.model:
        attn, arch = parse_model_name(cfg.model)
        if attn is not None:  # the embedded default: the same network without attention, and with SE, alongside
            cfg.compare = [m for m in (arch, "se_" + arch) if m != cfg.model]
    summary = train(cfg)
    if "comparison" in summary:
        print(f"{summary['data']}, {cfg.epochs} epochs, seed {cfg.seed}: test top-1 after the last and the best epoch")
        print(format_comparison(summary["comparison"]))
    else:
        print(json.dumps(summary, indent=2))
