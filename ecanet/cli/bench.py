"""``ecanet bench``: throughput and memory of models side by side, with interleaved repeats."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
from pathlib import Path

import torch

from ..studies.timing import provenance
from .flags import nonnegative_float, positive_int

SWEEP_PAIR = ["resnet50", "eca_resnet50"]


def add_parser(sub) -> None:
    from ..studies.bench import DEFAULT_MODELS
    from ..studies.bench_suite import SUITES

    p = sub.add_parser("bench", help="throughput and memory of models side by side, interleaved repeats")
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"zoo names, NAME:plain, tv:NAME, ort:NAME, timm:eca_resnet50 or weights files; ratios are to the "
        f"first (default {' '.join(DEFAULT_MODELS)}; with a sweep {' '.join(SWEEP_PAIR)})",
    )
    p.add_argument("--include-reference", action="store_true", help="add eca_resnet50:plain and timm's ECA")
    p.add_argument(
        "--suite",
        choices=sorted(SUITES),
        help="every family of the zoo at its native size and batch (ResNet-18/50/101 and MobileNetV2 at 224, "
        "batch 16; CIFAR ResNet-20/56 at 32, batch 64): twin, SE, ECA and torchvision's model",
    )
    p.add_argument("--families", nargs="+", metavar="TWIN", help="with --suite: only these families (e.g. resnet20)")
    p.add_argument(
        "--batch-sizes", nargs="+", type=positive_int, metavar="N", help="sweep: one run per batch size (and a figure)"
    )
    p.add_argument(
        "--image-sizes", nargs="+", type=positive_int, metavar="N", help="sweep: one run per image size (and a figure)"
    )
    p.add_argument("--batch-size", type=positive_int, default=None, help="default 16 (with --suite: each family's own)")
    p.add_argument(
        "--image-size", type=positive_int, default=None, help="default 224 (with --suite: each family's own)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="autocast dtype")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile every model (compiled once, untimed)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed repeats per model (interleaved)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument(
        "--repeat-seconds",
        type=nonnegative_float,
        default=0.5,
        help="a timed repeat runs a short step several times in a row, about this long (default 0.5)",
    )
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
    p.add_argument(
        "--control",
        action="store_true",
        help="add a second instance of the first model, timed like the others: its ratio, 1 up to this run's own "
        "error, says how far apart two identical models read here (an A/A control)",
    )
    p.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    p.add_argument(
        "--plot", metavar="FILE.png", help="write a bar chart of the ratios (a sweep: the ratios against the size)"
    )
    p.set_defaults(func=run)


def _mode(args: argparse.Namespace) -> str:
    """What to run: "suite", a sweep ("batch_size", "image_size") or "models"; conflicting flags refused."""
    chosen = [flag for flag in ("suite", "batch_sizes", "image_sizes") if getattr(args, flag)]
    if len(chosen) > 1:
        first, second = (f"--{flag.replace('_', '-')}" for flag in chosen[:2])
        raise ValueError(f"{first} and {second} cannot be combined; run them one at a time")
    if args.families and not args.suite:
        raise ValueError("--families needs --suite")
    if args.suite and args.models:
        raise ValueError("--suite chooses the models itself; leave out --models")
    return {"suite": "suite", "batch_sizes": "batch_size", "image_sizes": "image_size"}.get(
        chosen[0] if chosen else "", "models"
    )


def _families(args: argparse.Namespace) -> list:
    from ..studies.bench_suite import SUITES

    families = SUITES[args.suite]
    if not args.families:
        return families
    unknown = sorted(set(args.families) - {f.twin for f in families})
    if unknown:
        raise ValueError(f"--families: unknown {', '.join(unknown)}; choose from {' '.join(f.twin for f in families)}")
    return [f for f in families if f.twin in args.families]


def run(args: argparse.Namespace) -> None:
    from ..studies.bench import DEFAULT_MODELS, REFERENCE_MODELS, BenchConfig, format_rows, plot_rows, run_bench
    from ..studies.bench_suite import SWEEP_AXES, plot_sweep, run_suite, run_sweep

    mode = _mode(args)
    families = _families(args) if mode == "suite" else []
    models = args.models or (DEFAULT_MODELS if mode == "models" else SWEEP_PAIR)
    models = models + (REFERENCE_MODELS if args.include_reference else [])
    if args.include_reference and importlib.util.find_spec("timm") is None:
        models = [m for m in models if not m.startswith("timm:")]
        print('timm is not installed (the "timm" extra): timm:eca_resnet50 left out', file=sys.stderr)
    cfg = BenchConfig(
        models=models,
        batch_size=args.batch_size or 16,
        image_size=args.image_size or 224,
        device=args.device,
        dtype=args.dtype,
        channels_last=args.channels_last,
        compile=args.compile,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        repeat_seconds=args.repeat_seconds,
        memory=not (args.no_memory or args.inference_only),
        memory_repeats=args.memory_repeats,
        train=not args.inference_only,
        control=args.control,
    )
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    if mode == "suite":
        rows, lead = run_suite(cfg, families, args.image_size, args.batch_size, log=log), ("family", "image_size")
        shape = "each family at its own size and batch"
    elif mode == "models":
        rows, lead = run_bench(cfg, log=log), ()
        shape = f"batch {cfg.batch_size}, {cfg.image_size}x{cfg.image_size}"
    else:
        values = args.batch_sizes if mode == "batch_size" else args.image_sizes
        rows, lead = run_sweep(cfg, mode, values, log=log), ("batch_size", "image_size")
        shape = f"{mode.replace('_', ' ')}s {' '.join(map(str, values))}"
    for line in provenance(shlex.join(["ecanet", *sys.argv[1:]]) if sys.argv[0].endswith("ecanet") else None):
        print(line)
    print(
        f"{shape}, {cfg.device}, {cfg.dtype}, "
        f"{'channels_last' if cfg.channels_last else 'NCHW'}, {'compiled' if cfg.compile else 'eager'}, "
        f"{torch.get_num_threads()} threads, {cfg.repeats} interleaved repeats"
        f"{'' if cfg.train else ', inference only'}; torch {torch.__version__}"
    )
    print(format_rows(rows, lead))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.plot and mode in SWEEP_AXES:
        plot_sweep(rows, mode, args.plot)
    elif args.plot:
        plot_rows(rows, args.plot, ylabel="ratio to the family's twin" if mode == "suite" else None)
