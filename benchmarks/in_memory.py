"""End-to-end training speed of small images read from JPEG folders against the same images held decoded
in memory (``--in-memory``): ``ecanet train`` runs of a plain ResNet-20 at 32x32, interleaved repeats.

    python benchmarks/in_memory.py --data /tmp/acc5k --epochs 2 --repeats 3

DATA holds train/ and val/ image folders. Reported: wall seconds per run (decoding, training and
evaluation), training images per second end to end, and the training steps' own img/s from metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from ecanet.classification import train
from ecanet.classification.config import resolve
from ecanet.classification.data import ImageFolder
from ecanet.studies.table import render_table
from ecanet.studies.timing import interleaved, provenance


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    n = len(ImageFolder(Path(args.data) / "train"))
    work = Path(tempfile.mkdtemp())
    common = dict(model="resnet20", data=args.data, image_size=32, batch_size=args.batch_size, epochs=args.epochs)
    variants = {"folders, 2 workers": dict(workers=2), "in memory, 0 workers": dict(workers=0, in_memory=True)}
    steps: dict[str, list[float]] = {name: [] for name in variants}

    def run(name: str) -> None:
        out = work / f"{name.replace(' ', '_').replace(',', '')}_{len(steps[name])}"
        train(resolve(**common, **variants[name], output=str(out), compare=[]))
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        steps[name].append(statistics.fmean(r["img_per_s"] for r in records))

    seconds = interleaved({name: (lambda name=name: run(name)) for name in variants}, args.repeats)
    rows = []
    for name, times in seconds.items():
        wall = statistics.median(times)
        rows.append([name, f"{wall:.1f}", f"{n * args.epochs / wall:.1f}", f"{statistics.median(steps[name]):.1f}"])
    print("\n".join(provenance()))
    print(
        f"resnet20, {n} training images, 32x32, batch {args.batch_size}, {args.epochs} epochs with evaluation, "
        f"{args.repeats} interleaved repeats (medians), {torch.get_num_threads()} threads"
    )
    print(render_table(["data", "wall s per run", "img/s end to end", "training-step img/s"], rows))


if __name__ == "__main__":
    main()
