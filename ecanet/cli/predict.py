"""``ecanet predict``: the top-k classes of new images, by name, with probabilities."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from .evaluate import add_weights_flags, model_from_flags
from .flags import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="classify images with trained weights: top-k class names and probabilities")
    add_weights_flags(p, required=True)
    p.add_argument("images", nargs="+", help="image files, folders (every image below) or glob patterns")
    p.add_argument("--top-k", type=positive_int, default=5)
    p.add_argument(
        "--image-size", type=positive_int, default=None, help="default: the size the weights trained at, else 224"
    )
    p.add_argument("--output", help="also write the answers to FILE.csv or FILE.json")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..classification.predict import class_names, expand_images, predict

    if args.output and Path(args.output).suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--output: {args.output}: write a .csv or a .json file")
    paths = expand_images(args.images)
    model = model_from_flags(args)
    if class_names(model) is None:
        print(
            f"ecanet predict: {args.weights} records no class names (not trained on an image folder by this "
            "version): classes are shown as indices",
            file=sys.stderr,
        )
    image_size = args.image_size or model.config.get("image_size") or 224
    results, failed = predict(model, paths, image_size, args.top_k, args.device)
    for path, reason in failed:
        print(f"ecanet predict: {path}: cannot read this image ({reason})", file=sys.stderr)
    for r in results:
        print(f"{r['image']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"]))
    if args.output:
        _write(Path(args.output), results)
    if not results:
        raise ValueError("no image could be read")


def _write(path: Path, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(results, indent=2))
        return
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "rank", "index", "class", "probability"])
        for r in results:
            for rank, t in enumerate(r["top"], 1):
                writer.writerow([r["image"], rank, t["index"], t["class"], f"{t['probability']:.6f}"])
