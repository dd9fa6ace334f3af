"""Cost of attention in the tail of a zoo block, stage by stage, without the rest of the network.

The tail is what attention changes: ``relu(attention(bn(x)) + identity)`` after a ResNet block's last
convolution, ``attention(bn(x)) + identity`` after an inverted residual's projection (MobileNetV2: no ReLU;
timed with the shortcut in every block, though each stage's first block has none: the variants add the same
one operation for it). The input x stands for that convolution's output, the same in every variant: in
training x itself (its gradient accumulates in place), in inference a copy of x into one buffer (the step
overwrites it). A fresh full-size tensor per call (x * 1.0, before commit 2018aa7) timed the
allocator: whether glibc hands it out with its pages mapped depends on what the other variants allocate,
which made ECA's extra at ResNet-50's stage 2 (16, 512, 28, 28) +2.2 ms in one run where the same tails
timed alone (ad hoc, 15 repeats) differ by 0.06 ms. Variants:
``plain`` (torchvision's formulation, no attention: BatchNorm, in-place addition and ReLU), ``twin`` (the
zoo's attention-free block: its fused tail, the base of the extra times), ``se`` and ``eca`` (their fused
tails), ``eca plain`` (ECA's plain formulation) and, in inference, ``twin+pool`` (the twin's tail plus the
gate's pooled descriptor taken as the block takes it: the least any eager ECA adds). In a bottleneck's
inference the channel gates take that descriptor as the block does, from conv3's input (a quarter of the
channels) mapped through conv3's weights where the block's rule picks it, else from x. Each runs a training step
(forward + backward) and an inference step (forward without autograd, written into the convolution's output as
the blocks do) on the tensor shapes of the model's stages, timed repeats interleaved (a short step runs
several times per repeat). The table gives median milliseconds, the extra over the twin and the ATen operators
one step dispatches (forward and backward: each costs microseconds of dispatch whatever the tensor's size,
which is what ECA's cost is made of on small maps; the first line measures that floor); the last line sums the
extra per network step over the stages' blocks and, from the twin network's whole step timed in the same run
(``--step-repeats``), the ratio each variant's extra predicts: twin step / (twin step + extra). Whole-network
timings (``ecanet bench``) carry the noise of everything else in the step; this isolates the tail.
``--dtype bfloat16`` runs every tail under CPU autocast on bf16 maps, as the networks' tails run under
``ecanet bench --dtype bfloat16``; ``--frozen-bn`` takes frozen BatchNorm, as detection backbones train
(``benchmarks/detection.py --train``).

    python benchmarks/block_tail.py --repeats 21                              # ResNet-50, batch 16, 224
    python benchmarks/block_tail.py --model resnet56 --batch-size 64 --repeats 21    # CIFAR, 32x32
    python benchmarks/block_tail.py --model mobilenet_v2 --dtype bfloat16 --repeats 21
    python benchmarks/block_tail.py --frozen-bn --batch-size 1 --image-size 320 --repeats 21  # detection
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ecanet.bench import BenchConfig, Runner
from ecanet.layers import ECA, SE, fused_tail
from ecanet.models import Bottleneck
from ecanet.models.registry import ARCHS, stage_shapes
from ecanet.timing import calls_per_repeat, interleaved, provenance


def tails(args: argparse.Namespace, channels: int, size: int, k: int, train: bool) -> dict[str, Callable[[], None]]:
    batch, dtype, spec = args.batch_size, getattr(torch, args.dtype), ARCHS[args.model]
    relu = spec.family == "resnet"  # an inverted residual's tail has no ReLU
    shape = (batch, channels, size, size)
    x = torch.randn(shape, dtype=dtype, requires_grad=train)
    identity = torch.randn(shape, dtype=dtype, requires_grad=train)
    grad = torch.randn(shape, dtype=dtype)
    bn = FrozenBatchNorm2d(channels) if args.frozen_bn else nn.BatchNorm2d(channels).train(train)
    eca, se = ECA(channels, k), SE(channels)
    finish = (lambda y: y.backward(grad)) if train else (lambda y: None)
    bottleneck = spec.block == "bottleneck" and not train
    conv3_mean = _conv3_mean(batch, channels, size, dtype) if bottleneck else lambda: None
    buffer = None if train else torch.empty_like(x)  # no fresh full-size tensor per call (docstring)

    def conv_out() -> torch.Tensor:  # training: x itself, whose gradient accumulates in place
        return x if buffer is None else buffer.copy_(x)

    def plain_tail(attention: nn.Module) -> Callable[[], None]:  # as torchvision's blocks: in-place ops
        def step() -> None:
            out = attention(bn(conv_out()))
            out += identity
            finish(torch.relu_(out) if relu else out)

        return step

    def fused(attention: nn.Module | None) -> Callable[[], None]:
        def step() -> None:
            x_mean = None if attention is None else conv3_mean()
            finish(fused_tail(attention, bn, conv_out(), identity, relu=relu, x_mean=x_mean, inplace=True))

        return step

    variants = {
        "twin": fused(None),
        "plain": plain_tail(nn.Identity()),
        "se": fused(se),
        "eca": fused(eca),
        "eca plain": plain_tail(eca),
    }
    if not train:  # the least any eager ECA adds in inference: its pooled descriptor, then the twin's tail
        twin = variants["twin"]
        variants["twin+pool"] = lambda: (x.mean((2, 3)) if conv3_mean() is None else None, twin())
    if dtype == torch.float32:
        return variants
    return {name: _autocast(fn, dtype) for name, fn in variants.items()}


def _conv3_mean(batch: int, channels: int, size: int, dtype: torch.dtype) -> Callable[[], torch.Tensor | None]:
    """The pooled descriptor as a bottleneck takes it in inference: from its conv3's input (a quarter of the
    channels) mapped through conv3's weights, where the block's rule picks that, else None (pool x)."""
    block = Bottleneck(channels, channels // Bottleneck.expansion, attn="eca").eval()
    h = torch.randn(batch, channels // Bottleneck.expansion, size, size, dtype=dtype)
    return lambda: block._conv3_mean(h)


def _autocast(fn: Callable[[], None], dtype: torch.dtype) -> Callable[[], None]:
    def step() -> None:
        with torch.autocast("cpu", dtype=dtype):
            fn()

    return step


def op_count(fn: Callable[[], None]) -> int:
    """The ATen operators ``fn`` calls (top-level ones: not those an operator calls in turn), as the
    profiler records them. Not a dispatch mode: under one, ECA's gate takes the form a FLOP counter sees."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()

    def top_level(event) -> bool:
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        return parent is None

    return sum(e.name.startswith("aten::") and top_level(e) for e in prof.events())


def dispatch_floor(repeats: int) -> float:
    """Microseconds one small ATen operator costs from Python (an in-place addition on a (64, 64) tensor,
    the size of a gate's tensors): what every extra operator of a tail costs at least."""
    t, n = torch.zeros(64, 64), 1000
    times = interleaved({"op": lambda: [t.add_(1.0) for _ in range(n)]}, repeats, warmup=1)["op"]
    return statistics.median(times) / n * 1e6


def measure(args: argparse.Namespace, train: bool) -> None:
    phase = "training" if train else "inference"
    total: dict[str, float] = {}
    print(f"{'stage shape':>22}  {'variant':>10}  {phase + ' ms':>13}  {'extra ms':>8}  {'ATen ops':>8}")
    for channels, size, blocks, k in stage_shapes(args.model, args.image_size):
        fns = tails(args, channels, size, k, train)
        with torch.set_grad_enabled(train):
            ops = {name: op_count(fn) for name, fn in fns.items()}
            calls = calls_per_repeat(fns["twin"], args.repeat_seconds)
            times = interleaved(fns, args.repeats, warmup=2, calls=calls)
        base = statistics.median(times["twin"]) * 1e3
        for name, series in times.items():
            ms = statistics.median(series) * 1e3
            total[name] = total.get(name, 0.0) + blocks * (ms - base)
            shape = f"({args.batch_size}, {channels}, {size}, {size})"
            print(f"{shape:>22}  {name:>10}  {ms:13.3f}  {ms - base:+8.3f}  {ops[name]:8d}")
    blocks = ", ".join(str(n) for _, _, n, _ in stage_shapes(args.model))
    extra = ", ".join(f"{n} {v:+.1f} ms" for n, v in total.items())
    print(f"extra per {phase} step of {args.model} ({blocks} blocks) over the twin: {extra}")
    if args.step_repeats and not args.frozen_bn:  # a detector's step: benchmarks/detection.py --train
        step = twin_step_ms(args, train)
        ratios = ", ".join(f"{n} {step / (step + v):.3f}x" for n, v in total.items() if n != "twin")
        print(f"the twin {args.model}'s whole {phase} step: {step:.1f} ms; predicted ratio to it: {ratios}")


def twin_step_ms(args: argparse.Namespace, train: bool) -> float:
    """Median milliseconds of the twin network's whole step (``ecanet bench``'s inference or training step,
    the loss and SGD included), at the run's batch, image size and dtype."""
    size = args.image_size or (32 if ARCHS[args.model].dataset == "cifar" else 224)
    cfg = BenchConfig(models=[args.model], batch_size=args.batch_size, image_size=size, dtype=args.dtype)
    runner = Runner(args.model, cfg)
    fn = runner.train if train else runner.infer
    times = interleaved({"step": fn}, args.step_repeats, warmup=2)["step"]
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", choices=sorted(ARCHS), help="whose stage shapes to use")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=None, help="default: 224, or 32 for CIFAR ResNets")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16: autocast")
    parser.add_argument("--frozen-bn", action="store_true", help="frozen BatchNorm, as detection backbones train")
    parser.add_argument("--inference-only", action="store_true", help="no training steps")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--repeat-seconds", type=float, default=0.25)
    parser.add_argument("--step-repeats", type=int, default=5, help="timings of the twin's whole step (0: none)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("\n".join(provenance()))
    print(f"dispatch floor: {dispatch_floor(args.repeats):.2f} us per small ATen operator from Python")
    measure(args, train=False)
    if not args.inference_only:
        measure(args, train=True)


if __name__ == "__main__":
    main()
