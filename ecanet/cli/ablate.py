"""``ecanet ablate-k``: the paper's kernel-size study (Figure 4)."""

from __future__ import annotations

import argparse

from ..classification.config import TrainConfig
from .flags import add_config_flags, config_values


def add_parser(sub) -> None:
    p = sub.add_parser("ablate-k", help="the paper's kernel-size study: k = 3, 5, 7, 9, adaptive, SE, none")
    add_config_flags(p, TrainConfig, skip={"eca_k", "compare"})
    p.add_argument("--ks", type=int, nargs="+", default=[3, 5, 7, 9], help="fixed kernel sizes to try")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed and setting")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..classification.config import resolve
    from ..studies.ablation import ablate_k
    from ..studies.comparison import format_comparison

    overrides = config_values(args, TrainConfig)
    overrides["model"] = args.model or "resnet20"
    overrides["output"] = args.output or "runs/ablate_k"
    print(format_comparison(ablate_k(resolve(config_file=args.config, **overrides), args.ks, args.seeds)))
