"""Cost of ECA in the tail of a ResNet-50 bottleneck, stage by stage, without the rest of the network.

The tail is what ECA changes: ``relu(bn3(x) + identity)`` in ResNet-50 (x * 1.0, the input, stands for
conv3's output and is the same in every variant), ``relu(eca(bn3(x)) + identity)``
in ECA-ResNet-50. Each variant runs a training step (forward + backward) and an inference step (forward
without autograd; the fast path writes into conv3's output as the blocks do, but reads the pooled
descriptor from x, where the bottleneck reads conv3's smaller input at stages 1-3) on the tensor shapes of the
four stages (batch 16, 224x224 input), with timed repeats interleaved; the table gives median milliseconds
and the extra time over ResNet's tail, and the last lines the extra per step summed over the 3, 4, 6, 3
blocks of the stages (negative: faster than ResNet's tail).
Whole-network timings (``ecanet bench``) carry the noise of everything else in the step; this isolates ECA.

    python benchmarks/block_tail.py --repeats 21
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import nn

from ecanet.layers import ECA, fused_tail
from ecanet.models.registry import stage_shapes
from ecanet.timing import interleaved, provenance


def tails(batch: int, channels: int, size: int, k: int, train: bool) -> dict[str, Callable[[], None]]:
    shape = (batch, channels, size, size)
    x = torch.randn(shape, requires_grad=train)
    identity = torch.randn(shape, requires_grad=train)
    grad = torch.randn(shape)
    bn, eca = nn.BatchNorm2d(channels).train(train), ECA(channels, k)
    finish = (lambda y: y.backward(grad)) if train else (lambda y: None)

    def resnet() -> None:  # as torchvision's Bottleneck: in-place addition and ReLU
        out = bn(x * 1.0)
        out += identity
        finish(torch.relu_(out))

    def eca_plain() -> None:
        out = eca(bn(x * 1.0))
        out += identity
        finish(torch.relu_(out))

    def eca_fast() -> None:
        finish(fused_tail(eca, bn, x * 1.0, identity, inplace=True))

    return {"resnet50": resnet, "eca plain": eca_plain, "eca fast path": eca_fast}


def measure(args: argparse.Namespace, train: bool) -> None:
    phase = "training" if train else "inference"
    total: dict[str, float] = {}
    print(f"{'stage shape':>22}  {'variant':>14}  {phase + ' ms':>13}  {'extra ms':>8}")
    for channels, size, blocks, k in stage_shapes("resnet50"):
        fns = tails(args.batch_size, channels, size, k, train)
        with torch.set_grad_enabled(train):
            times = interleaved(fns, args.repeats, warmup=2)
        base = statistics.median(times["resnet50"]) * 1e3
        for name, series in times.items():
            ms = statistics.median(series) * 1e3
            total[name] = total.get(name, 0.0) + blocks * (ms - base)
            shape = f"({args.batch_size}, {channels}, {size}, {size})"
            print(f"{shape:>22}  {name:>14}  {ms:13.2f}  {ms - base:+8.2f}")
    extra = ", ".join(f"{n} {v:+.1f} ms" for n, v in total.items())
    print(f"extra per {phase} step (3, 4, 6, 3 blocks): {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("\n".join(provenance()))
    measure(args, train=False)
    measure(args, train=True)


if __name__ == "__main__":
    main()
