"""``ecanet prune``: a smaller, faster network from trained weights (the "prune" extra)."""

from __future__ import annotations

import argparse
import json

from ..pruning.config import NOT_FLAGS, PruneConfig
from .flags import add_config_flags, file_and_flags


def add_parser(sub) -> None:
    p = sub.add_parser(
        "prune", help='channel pruning ranked by ECA gates or another criterion, compensation, fine-tuning ("prune")'
    )
    add_config_flags(p, PruneConfig, skip=NOT_FLAGS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..pruning.experiment import format_rows, run_prune

    summary = run_prune(file_and_flags(args, PruneConfig))
    print(format_rows(summary["rows"]))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))
