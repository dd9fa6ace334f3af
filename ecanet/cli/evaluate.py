"""``ecanet eval``: top-1, top-5 and loss of weights on an image folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .flags import positive_int


def add_weights_flags(p: argparse.ArgumentParser, required: bool = False) -> None:
    """--weights / --model / --num-classes: the model is built to fit the file (see ``load_checkpoint``)."""
    p.add_argument("--weights", required=required, help="weights file (any format load_checkpoint reads)")
    p.add_argument("--model", help="zoo model (default: read from the file; an error if the file holds another)")
    p.add_argument("--num-classes", type=positive_int, default=None, help="default: the file's; must agree with it")


def model_from_flags(args: argparse.Namespace):
    """The model behind --weights (with --model / --num-classes checked against the file)."""
    from ..weights import load_checkpoint

    if args.weights is None:
        raise ValueError("--weights is required")
    return load_checkpoint(args.weights, args.model, num_classes=args.num_classes)


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="top-1, top-5 and loss of weights on an image folder")
    add_weights_flags(p, required=True)
    p.add_argument("--data", help="ImageFolder root; its val/ folder is evaluated")
    p.add_argument("--val-dir", help="the folder to evaluate, if not DATA/val")
    p.add_argument("--image-size", type=positive_int, default=224)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..classification import evaluate

    val_dir = args.val_dir or (str(Path(args.data) / "val") if args.data else None)
    if val_dir is None:
        raise ValueError("--data or --val-dir is required")
    model = model_from_flags(args)
    result = evaluate(model, val_dir, args.image_size, args.batch_size, args.workers, args.device)
    print(json.dumps(result, indent=2))
