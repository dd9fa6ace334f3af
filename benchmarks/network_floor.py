"""ECA's cost inside a whole network step, against the least any eager ECA would add there.

`block_tail.py` times a block's tail alone, its tensors in cache and nothing else running between calls; in a
network step the same Python code and small operators run between convolutions that evict the caches, and
cost more (ResNet-56: ECA's training tail costs 0.3–0.7 ms more than its twin's alone, 0.9 ms more in the
step). This script times whole steps (`ecanet bench`'s: inference, or forward, loss, backward and SGD) of
networks of one zoo family (the ResNets, MobileNetV2), interleaved, with paired ratios:

- ``twin``: the attention-free twin (the ratios' base);
- ``twin+least``: the twin, and after every block, on the block's output map, what ECA computes in any
  eager formulation that leaves the twin's BatchNorm as it is: its pooled descriptor (one reduction) and its
  gate (the 1-D convolution and sigmoid, as ECA computes them: ``gate`` in inference, ``gate_vjp`` in
  training, where the fused step takes its derivative from it); in training also the gate's
  derivative and the reduction the scale's gradient needs (the sum over positions of the gradient times
  the map: ``kernels.channel_sums``), in the backward pass on the gradient that arrives and the kept map;
- ``twin+gate``: the same without the two reductions (the gate on a kept (N, C) tensor);
- ``twin+calls``: the twin, and after every block as many small operator calls (an in-place addition on an
  (N, C) tensor) as ECA's fused tail makes beyond the twin's at that block's shape, forward and backward:
  what ECA's step costs in calls alone, and so what one call costs inside a network step;
- ``twin again``: a second instance of the twin, timed like the others: the A/A control, whose ratio (1 up
  to the measurement's own error) says how far apart two identical networks read in the same run;
- ``eca``: the ECA network (its fused tail).

In inference ``twin+least`` bounds every eager ECA: the scaling needs the gate's weights first, so the
pooling is a pass of its own, which eager PyTorch cannot take inside the convolution that writes the map
(where ECA's bottleneck pools conv3's input, a quarter of the channels, and maps its mean through conv3,
so does ``twin+least``). In training it bounds every eager ECA made of whole-tensor operators: the gate mixes
neighbouring channels, so the backward reads the gradient and the map once for their sums and again, after
the gate's derivative, for the input gradient, where BatchNorm's own backward sums and writes each channel
while it is in cache — two reads of a map more than the twin, as ``twin+least`` makes
(docs/benchmarks.md, "The floor at the cross-channel barrier"). ``twin+gate`` is what would remain if
those reads were shared.

Every variant runs both phases twice before any is timed, as ``ecanet bench`` does: after a training step
the process holds memory that inference's buffers reuse, where an inference-only process (``--inference-only``
here and there) faults them in page by page (MobileNetV2's inference step 1.8 times as long).

    python benchmarks/network_floor.py --model resnet56 --repeats 21
    python benchmarks/network_floor.py --model resnet20 --inference-only --repeats 31
    python benchmarks/network_floor.py --model mobilenet_v2 --repeats 21
    python benchmarks/network_floor.py --model mobilenet_v2 --dtype bfloat16 --repeats 31
    python benchmarks/network_floor.py --model resnet50 --timed inference --repeats 21
    python benchmarks/network_floor.py --model mobilenet_v2 --batch-size 1 --inference-only --repeats 61

Run from the repository root (it takes ``block_tail.py``'s operator count).
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from block_tail import op_count
from torch import Tensor, nn

from ecanet.bench import BenchConfig, Runner
from ecanet.layers import fused_tail
from ecanet.layers.fused.kernels import channel_sums
from ecanet.models.mobilenetv2 import InvertedResidual
from ecanet.models.registry import ARCHS
from ecanet.models.resnet import AttentionBlock, Bottleneck
from ecanet.timing import calls_per_repeat, interleaved, provenance

BLOCKS = (AttentionBlock, InvertedResidual)  # a ResNet's blocks; MobileNetV2's (whose tail has no ReLU)


def attention_of(block: nn.Module) -> nn.Module:
    """The attention module of an ECA network's block."""
    return block.attention_module if isinstance(block, AttentionBlock) else block.conv[-1]


class Least(nn.Module):
    """A twin block followed by the least ECA adds, on the block's output; ``gate`` is the ECA network's
    module of the same block (its kernel size). ``reductions=False`` leaves out the two reductions over the
    map (the gate then runs on a kept (N, C) tensor): what remains if a step shares them with BatchNorm's."""

    def __init__(self, block: nn.Module, gate: nn.Module, reductions: bool = True) -> None:
        super().__init__()
        self.block, self.gate, self.reductions = block, gate, reductions
        self.kept: Tensor | None = None
        self.conv3_input: Tensor | None = None
        if isinstance(block, Bottleneck):  # ECA's bottleneck may pool conv3's input instead: keep it
            block.conv3.register_forward_pre_hook(lambda m, args: setattr(self, "conv3_input", args[0]))

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        with torch.no_grad():
            h = out.detach()
            if self.reductions:
                # where ECA's bottleneck maps conv3's input mean through conv3 (its rule: inference, and
                # conv3's input narrow enough), so does this: the floor of the pooling it makes
                mapped = None if self.conv3_input is None else self.block._conv3_mean(self.conv3_input)
                pooled = h.mean((2, 3)) if mapped is None else mapped
                self.conv3_input = None
            else:
                if self.kept is None or self.kept.shape != h.shape[:2]:
                    self.kept = h.new_zeros(h.shape[:2])
                pooled = self.kept
            if not (self.training and torch.is_grad_enabled()):
                self.gate.gate(pooled)  # inference: ECA's gate, in the form it takes for this shape
                return out
            weights, vjp = self.gate.gate_vjp(pooled)
        # the gate's derivative and the reduction the scale's gradient needs, in backward on the gradient that
        # arrives and the kept map, as ECA's backward reads them
        return _BackwardSums.apply(out, pooled, weights, vjp, self.reductions)


class _BackwardSums(torch.autograd.Function):
    """The identity on a block's output h, whose backward takes what ECA's takes beyond the twin's: the sums
    over positions of the gradient times h (``kernels.channel_sums``: a read of both after every channel's
    sums are due, where BatchNorm's backward has each channel in cache; h stands in for BatchNorm's input),
    then the gate's derivative."""

    @staticmethod
    def forward(ctx, out: Tensor, pooled: Tensor, weights: Tensor, vjp, reductions: bool) -> Tensor:
        ctx.vjp, ctx.reductions = vjp, reductions
        ctx.save_for_backward(out, pooled, weights)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g: Tensor):
        h, pooled, weights = ctx.saved_tensors
        # NCHW maps, so that channel_sums writes nothing into its scratch argument (h)
        ctx.vjp(channel_sums(g, h, pooled, weights, h)[1] if ctx.reductions else weights)
        return g, None, None, None, None


class _BackwardCalls(torch.autograd.Function):
    """The identity on a block's output, whose backward makes ``calls`` small operator calls."""

    @staticmethod
    def forward(ctx, out: Tensor, kept: Tensor, calls: int) -> Tensor:
        ctx.kept, ctx.calls = kept, calls
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g: Tensor):
        for _ in range(ctx.calls):
            ctx.kept.add_(0.0)
        return g, None, None


class Calls(nn.Module):
    """A twin block followed by small operator calls (an in-place addition on a kept (N, C) tensor: a call's
    dispatch, nothing of its arithmetic): ``counts`` = (forward, backward) in training, forward in
    inference."""

    def __init__(self, block: nn.Module, counts: tuple[int, int, int]) -> None:
        super().__init__()
        self.block, self.counts = block, counts
        self.kept: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        if self.kept is None or self.kept.shape != out.shape[:2]:
            self.kept = out.new_zeros(out.shape[:2])
        forward_calls, backward_calls, inference_calls = self.counts
        with torch.no_grad():
            for _ in range(forward_calls if self.training else inference_calls):
                self.kept.add_(0.0)
        return _BackwardCalls.apply(out, self.kept, backward_calls) if torch.is_grad_enabled() else out


def extra_calls(attention: nn.Module, shape: torch.Size, relu: bool) -> tuple[int, int, int]:
    """The operator calls ECA's fused tail (``attention``'s) makes beyond the twin's on a map of ``shape``:
    forward and backward in training, forward in inference."""
    x = torch.randn(shape, requires_grad=True)
    identity, grad = torch.randn_like(x, requires_grad=True), torch.randn_like(x)
    norm = nn.BatchNorm2d(shape[1])
    counts = []
    for gate in (copy.deepcopy(attention), None):
        forward = op_count(lambda gate=gate: fused_tail(gate, norm.train(), x, identity))
        y = fused_tail(gate, norm, x, identity)
        backward = op_count(lambda y=y: y.backward(grad))
        with torch.no_grad():
            inference = op_count(
                lambda gate=gate: fused_tail(gate, norm.eval(), x.detach().clone(), identity, inplace=True)
            )
        counts.append((forward, backward, inference))
    eca, twin = counts
    return tuple(e - t for e, t in zip(eca, twin))


def block_calls(eca: nn.Module, batch: int, size: int) -> dict[str, tuple[int, int, int]]:
    """``extra_calls`` of every attention block of ``eca``, by name, at its output's shape."""
    shapes: dict[str, torch.Size] = {}
    hooks = [
        m.register_forward_hook(lambda m, args, out, name=name: shapes.__setitem__(name, out.shape))
        for name, m in eca.named_modules()
        if isinstance(m, BLOCKS)
    ]
    with torch.no_grad():
        eca(torch.randn(batch, 3, size, size))
    for hook in hooks:
        hook.remove()
    counts: dict[torch.Size, tuple[int, int, int]] = {}
    for name, shape in shapes.items():
        if shape not in counts:
            block = eca.get_submodule(name)
            counts[shape] = extra_calls(attention_of(block), shape, relu=isinstance(block, AttentionBlock))
    return {name: counts[shape] for name, shape in shapes.items()}


def with_least(twin: nn.Module, eca: nn.Module, reductions: bool = True) -> nn.Module:
    """A copy of ``twin`` whose every attention block is followed by ``Least`` with ``eca``'s gate."""
    gates = {name: attention_of(m) for name, m in eca.named_modules() if isinstance(m, BLOCKS)}
    return _wrapped(twin, lambda full, block: Least(block, copy.deepcopy(gates[full]), reductions))


def with_calls(twin: nn.Module, calls: dict[str, tuple[int, int, int]]) -> nn.Module:
    """A copy of ``twin`` whose every attention block is followed by ``Calls``, as many as ECA's block of
    the same name makes beyond the twin's (``block_calls``)."""
    return _wrapped(twin, lambda full, block: Calls(block, calls[full]))


def _wrapped(twin: nn.Module, wrap) -> nn.Module:
    """A copy of ``twin`` with every attention block replaced by ``wrap(its name, it)``."""
    model = copy.deepcopy(twin)
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BLOCKS):
                setattr(parent, name, wrap(f"{parent_name}.{name}" if parent_name else name, child))
    return model


def main() -> None:
    twins = sorted(ARCHS)  # the attention-free twins: ResNets and MobileNetV2
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet56", choices=twins, help="the twin (ECA: eca_ + name)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 (CIFAR) or 16")
    parser.add_argument("--image-size", type=int, default=None, help="default: 32 (CIFAR) or 224")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16: autocast")
    parser.add_argument("--inference-only", action="store_true", help="no training steps")
    parser.add_argument(
        "--timed", choices=["inference", "training"], default=None, help="time one phase (both still warmed up)"
    )
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--repeat-seconds", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.inference_only and args.timed == "training":
        parser.error("--timed training: there are no training steps with --inference-only")
    torch.set_num_threads(args.threads)
    cifar = ARCHS[args.model].dataset == "cifar"
    size = args.image_size or (32 if cifar else 224)
    batch = args.batch_size or (64 if cifar else 16)
    print("\n".join(provenance()))
    cfg = BenchConfig(models=[args.model], batch_size=batch, image_size=size, dtype=args.dtype)
    twin, eca = Runner(args.model, cfg), Runner(f"eca_{args.model}", cfg)
    calls = block_calls(eca.model, batch, size)
    variants = {
        "twin+gate": with_least(twin.model, eca.model, reductions=False),
        "twin+least": with_least(twin.model, eca.model),
        "twin+calls": with_calls(twin.model, calls),
    }
    runners = {"twin": twin}
    for name, model in variants.items():
        runner = runners[name] = Runner(args.model, cfg)
        runner.model = runner.step_fn = model
        runner.opt = torch.optim.SGD(runner.model.parameters(), lr=1e-3, momentum=0.9)
    runners["twin again"] = Runner(args.model, cfg)
    runners["eca"] = eca
    print(
        f"{args.model}, batch {batch}, {size}x{size}, {args.dtype}, eager, {args.threads} threads, {args.repeats} interleaved repeats"
    )
    mean_calls = [statistics.mean(c[i] for c in calls.values()) for i in range(3)]
    print(
        "twin+calls, per block (mean; ECA's tail over the twin's): training {:.1f} forward + {:.1f} backward, "
        "inference {:.1f}".format(*mean_calls)
    )
    print(f"{'phase':>9}  {'variant':>10}  {'step ms':>8}  {'twin / it':>9}  {'extra per block':>15}")
    blocks = sum(isinstance(m, BLOCKS) for m in twin.model.modules())
    phases = ["inference"] + ([] if args.inference_only else ["training"])
    steps = {
        phase: {name: (r.infer if phase == "inference" else r.train) for name, r in runners.items()} for phase in phases
    }
    for name in runners:  # every phase warmed up before any is timed, as ecanet bench does
        for _ in range(2):
            for phase in phases:
                steps[phase][name]()
    for phase, fns in steps.items():
        if args.timed not in (None, phase):
            continue
        times = interleaved(fns, args.repeats, calls=calls_per_repeat(fns["twin"], args.repeat_seconds))
        base = statistics.median(times["twin"])
        for name, series in times.items():
            ratio = statistics.median(a / b for a, b in zip(series, times["twin"]))  # paired, as ecanet bench
            extra_us = (ratio - 1) * base / blocks * 1e6
            print(
                f"{phase:>9}  {name:>10}  {statistics.median(series) * 1e3:8.1f}  {1 / ratio:9.3f}  {extra_us:+12.0f} us"
            )


if __name__ == "__main__":
    main()
