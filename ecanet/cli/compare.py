"""``ecanet compare``: several models, several seeds each, trained alike; mean +- sd and paired intervals."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..classification.config import TrainConfig
from .flags import add_config_flags, config_values, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="train models x seeds alike; mean +- sd of top-1 and paired 95 %% intervals")
    add_config_flags(p, TrainConfig, skip={"model", "compare"})
    p.add_argument(
        "--models", nargs="+", required=True,
        help="zoo models, NAME@WIDTHS_FILE for a searched width configuration; the first is the reference",
    )  # fmt: skip
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..N-1 per model (default 3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..classification.compare import compare
    from ..classification.config import resolve
    from ..models import parse_model_name
    from ..studies.comparison import Arm, format_comparison

    overrides = config_values(args, TrainConfig)
    overrides["output"] = args.output or "runs/compare"
    cfg = resolve(config_file=args.config, **overrides)
    arms = []
    for spec in args.models:
        name, _, widths = spec.partition("@")
        parse_model_name(name)  # an unknown name fails before any training
        if widths and not Path(widths).is_file():
            raise ValueError(f"--models {spec}: no widths file {widths}")
        label = f"{name}@{Path(widths).stem}" if widths else name
        arms.append(Arm(label, name, cfg.eca_k, widths or None))
    result = compare(cfg, arms, list(range(args.seeds)))
    print(format_comparison(result))
