"""Throughput of the training input pipeline and of the training step, measured separately.

    python benchmarks/train_throughput.py --images 256 --workers 0 2 --model eca_resnet50 --batch-size 16

The data part decodes and augments a generated folder of JPEGs (random-resized-crop 224 + flip, the paper's
setting) through the same DataLoader the trainer builds; the step part times forward + backward + SGD
step on a fixed batch (see ecanet.studies.bench.Runner). Medians of interleaved repeats; no assertions.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ecanet.classification.data import ImageFolder, collate_skipping, train_transform
from ecanet.studies.bench import BenchConfig, Runner
from ecanet.studies.timing import interleaved, provenance


def make_folder(root: Path, n: int, size: int = 320) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = root / f"class{i % 4}"
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(cls / f"{i}.jpg", quality=90)
    return root


def read_all(root: Path, workers: int, batch_size: int, image_size: int) -> None:
    loader = DataLoader(
        ImageFolder(root, train_transform(image_size)),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_skipping,
        persistent_workers=False,
    )
    for _ in loader:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--model", default="eca_resnet50")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp), args.images)
        runner = Runner(args.model, BenchConfig(models=[], batch_size=args.batch_size, image_size=args.image_size))
        runner.train()
        # seconds per pass over the folder (each data loader) and per training step, interleaved
        fns = {w: (lambda w=w: read_all(root, w, args.batch_size, args.image_size)) for w in args.workers}
        seconds = interleaved({**fns, "step": runner.train}, args.repeats)
    data = {w: [args.images / t for t in seconds[w]] for w in args.workers}
    step = [args.batch_size / t for t in seconds["step"]]
    print("\n".join(provenance()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, {args.image_size}px")
    for w, values in data.items():
        print(
            f"data pipeline, {w} workers: {statistics.median(values):.1f} img/s (min {min(values):.1f}, max {max(values):.1f})"
        )
    print(
        f"training step, {args.model}: {statistics.median(step):.2f} img/s (min {min(step):.2f}, max {max(step):.2f})"
    )


if __name__ == "__main__":
    main()
