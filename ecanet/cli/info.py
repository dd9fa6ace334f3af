"""``ecanet info``: the complexity table of zoo models."""

from __future__ import annotations

import argparse
import json

from ..studies.info import format_table, info_table
from .flags import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="complexity table of zoo models (params, FLOPs, attention cost, k per stage)")
    p.add_argument("models", nargs="*", help="model names or weights files (default: every ImageNet model)")
    p.add_argument("--image-size", type=positive_int, default=None, help="input side (default 224; 32 for CIFAR)")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    rows = info_table(args.models or None, args.image_size)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        size = f"{args.image_size}x{args.image_size}" if args.image_size else "224x224 (CIFAR models: 32x32)"
        print(f"Per-image cost at {size}; FLOPs in the paper's sense (multiply-accumulates)")
        print(format_table(rows))
