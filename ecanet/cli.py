"""The ``ecanet`` command (also ``python -m ecanet``)."""

from __future__ import annotations

import argparse
import json
import sys

from .info import format_table, info_table


def _info(args: argparse.Namespace) -> None:
    rows = info_table(args.models or None, args.image_size)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        size = f"{args.image_size}x{args.image_size}" if args.image_size else "224x224 (CIFAR models: 32x32)"
        print(f"Per-image cost at {size}; FLOPs in the paper's sense (multiply-accumulates)")
        print(format_table(rows))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecanet", description="ECA-Net: Efficient Channel Attention toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="complexity table of zoo models (params, FLOPs, attention cost, k per stage)")
    p.add_argument("models", nargs="*", help="model names (default: every ImageNet model)")
    p.add_argument("--image-size", type=int, default=None, help="input side (default 224; 32 for CIFAR models)")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"ecanet {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
