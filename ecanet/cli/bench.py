"""``ecanet bench``: throughput and memory of models side by side, with interleaved repeats."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
from pathlib import Path

import torch

from ..timing import provenance
from .flags import positive_int


def add_parser(sub) -> None:
    from ..bench import DEFAULT_MODELS

    p = sub.add_parser("bench", help="throughput and memory of models side by side, interleaved repeats")
    p.add_argument(
        "--models", nargs="+", default=DEFAULT_MODELS, help="zoo names, NAME:plain, timm:eca_resnet50 or weights files"
    )
    p.add_argument("--include-reference", action="store_true", help="add eca_resnet50:plain and timm's ECA")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--image-size", type=positive_int, default=224)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="autocast dtype")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile every model (compiled once, untimed)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed repeats per model (interleaved)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument(
        "--memory-repeats",
        type=positive_int,
        default=1,
        help="fresh subprocesses per model for the peak memory; the smallest peak is reported",
    )
    p.add_argument(
        "--inference-only",
        action="store_true",
        help="time inference only, with no training step in the process (as in deployment); implies --no-memory",
    )
    p.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write a bar chart of the ratios")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..bench import REFERENCE_MODELS, BenchConfig, format_rows, plot_rows, run_bench

    models = args.models + (REFERENCE_MODELS if args.include_reference else [])
    if args.include_reference and importlib.util.find_spec("timm") is None:
        models = [m for m in models if not m.startswith("timm:")]
        print('timm is not installed (the "timm" extra): timm:eca_resnet50 left out', file=sys.stderr)
    cfg = BenchConfig(
        models=models,
        batch_size=args.batch_size,
        image_size=args.image_size,
        device=args.device,
        dtype=args.dtype,
        channels_last=args.channels_last,
        compile=args.compile,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        memory=not (args.no_memory or args.inference_only),
        memory_repeats=args.memory_repeats,
        train=not args.inference_only,
    )
    rows = run_bench(cfg, log=lambda msg: print(msg, file=sys.stderr))
    for line in provenance(shlex.join(["ecanet", *sys.argv[1:]]) if sys.argv[0].endswith("ecanet") else None):
        print(line)
    print(
        f"batch {cfg.batch_size}, {cfg.image_size}x{cfg.image_size}, {cfg.device}, {cfg.dtype}, "
        f"{'channels_last' if cfg.channels_last else 'NCHW'}, {'compiled' if cfg.compile else 'eager'}, "
        f"{torch.get_num_threads()} threads, {cfg.repeats} interleaved repeats"
        f"{'' if cfg.train else ', inference only'}; torch {torch.__version__}"
    )
    print(format_rows(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.plot:
        plot_rows(rows, args.plot)
