"""One channel-gate call, ECA's against SE's, at the descriptor shape of every stage of a zoo network.

A gate maps the pooled descriptor (N, C) to channel weights (N, C). In inference the fused tails call
``gate`` under ``torch.no_grad``; in training ``gate_vjp`` (forward and backward: written out for ECA,
autograd over SE's small graph). On small maps these calls cost microseconds of dispatch each, too few for a
whole step to resolve (docs/benchmarks.md), so they are timed here alone: interleaved repeats, each timing
enough calls to last ``--seconds``, median microseconds per call. The last line of each network sums ECA
minus SE over its blocks: what the gates add to, or save from, one network step.

    python benchmarks/gate_call.py                                   # every zoo family at its native batch
    python benchmarks/gate_call.py --models resnet50 mobilenet_v2 --batch-size 1
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import nn

from ecanet.layers import ECA, SE
from ecanet.layers.fused.function import gate_vjp
from ecanet.models.registry import ARCHS, stage_shapes
from ecanet.timing import calls_per_repeat, interleaved, provenance

FAMILIES = ("resnet20", "resnet56", "resnet18", "resnet50", "resnet101", "mobilenet_v2")


def gate_calls(attention: nn.Module, pooled: torch.Tensor, phase: str) -> Callable[[], None]:
    """One inference gate call, or one training gate call (the weights, then their vector-Jacobian product)."""
    if phase == "inference":
        return lambda: attention.gate(pooled)
    d_weights = torch.rand_like(pooled)

    def train() -> None:
        _, vjp = gate_vjp(attention, pooled)
        vjp(d_weights)

    return train


def median_us(fns: dict[str, Callable[[], None]], args: argparse.Namespace) -> dict[str, float]:
    for fn in fns.values():  # warm-up
        fn()
    calls = calls_per_repeat(next(iter(fns.values())), args.seconds)
    times = interleaved(fns, args.repeats, warmup=2, calls=calls)
    return {name: statistics.median(t) * 1e6 for name, t in times.items()}


def network_rows(model: str, args: argparse.Namespace) -> list[str]:
    batch = args.batch_size or (64 if ARCHS[model].dataset == "cifar" else 16)
    lines = [f"{model}, batch {batch}: stage (N, C, k) x blocks: ECA / SE us per call, ECA - SE"]
    totals = dict.fromkeys(args.phases, 0.0)
    for i, (channels, _, blocks, k) in enumerate(stage_shapes(model)):
        torch.manual_seed(i)
        eca, se, pooled = ECA(channels, k), SE(channels), torch.randn(batch, channels)
        cells = []
        for phase in args.phases:
            with torch.no_grad():
                us = median_us({"eca": gate_calls(eca, pooled, phase), "se": gate_calls(se, pooled, phase)}, args)
            totals[phase] += blocks * (us["eca"] - us["se"])
            cells.append(f"{phase} {us['eca']:6.1f} / {us['se']:6.1f}, {us['eca'] - us['se']:+6.1f}")
        lines.append(f"  stage {i + 1} ({batch}, {channels}, {k}) x {blocks}: " + "; ".join(cells))
    lines.append("  per network step, ECA - SE: " + "; ".join(f"{p} {totals[p]:+.0f} us" for p in args.phases))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(FAMILIES), choices=sorted(ARCHS))
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 for CIFAR networks, else 16")
    parser.add_argument("--phases", nargs="+", default=["inference", "training"], choices=["inference", "training"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.02, help="length of one timed repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print("\n".join(provenance()))
    for model in args.models:
        print("\n".join(network_rows(model, args)), flush=True)


if __name__ == "__main__":
    main()
