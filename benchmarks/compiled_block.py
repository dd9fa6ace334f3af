"""What ECA adds to a compiled ResNet-50 bottleneck in inference, kernel by kernel, stage by stage.

Whole-network timings of compiled models move by a few percent between runs on a shared machine, more than
all of ECA's cost. Here each stage's bottleneck (batch 16, 224x224 input, channels_last, eval mode) is
compiled with and without ECA, both run in turns under the profiler with Inductor's per-kernel records on,
and the time of everything but the convolutions (which are the same in both) is summed per block: the
generated kernels and the small matrix products. The table gives milliseconds per block call, ECA's extra,
and the extra per inference step summed over the 3, 4, 6, 3 blocks of the stages; ``--kernels`` lists the
kernels of each block.

    python benchmarks/compiled_block.py --repeats 30
"""

from __future__ import annotations

import argparse
import collections
import re

import torch
import torch._inductor.config as inductor_config
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from ecanet.models import Bottleneck
from ecanet.models.registry import stage_shapes
from ecanet.timing import provenance

STAGES = stage_shapes("resnet50")  # C, H=W, blocks, k (k3557)

VARIANTS = {"resnet50": None, "eca": "eca"}


def compiled_block(channels: int, attn: str | None, k: int) -> nn.Module:
    torch.manual_seed(0)
    planes = channels // Bottleneck.expansion
    block = Bottleneck(channels, planes, attn=attn, kernel_size=k if attn else None)
    for m in block.modules():  # running statistics that are not the identity map, as after training
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.running_var, 0.5, 2.0)
    return torch.compile(block.eval().to(memory_format=torch.channels_last))


def kernel_times(args: argparse.Namespace, channels: int, size: int, k: int) -> dict[str, collections.Counter]:
    """Milliseconds per call of each non-convolution kernel, per variant."""
    x = torch.randn(args.batch_size, channels, size, size).to(memory_format=torch.channels_last)
    blocks = {name: compiled_block(channels, attn, k) for name, attn in VARIANTS.items()}
    with torch.no_grad():
        for block in blocks.values():
            block(x)
            block(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.repeats):
                for name, block in blocks.items():
                    with record_function(f"variant:{name}"):
                        block(x)
    events = prof.events()
    spans = {
        name: [(e.time_range.start, e.time_range.end) for e in events if e.name == f"variant:{name}"] for name in blocks
    }
    times: dict[str, collections.Counter] = {name: collections.Counter() for name in blocks}
    for e in events:
        if not (e.name.startswith("graph_") or e.name in ("aten::mm", "aten::addmm", "aten::bmm")):
            continue
        kernel = re.sub(r"^graph_\d+_cpp_fused_|_\d+$", "", e.name)
        for name, ranges in spans.items():
            if any(start <= e.time_range.start <= end for start, end in ranges):
                times[name][kernel] += e.cpu_time_total / args.repeats / 1e3
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kernels", action="store_true", help="list every block's kernels")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inductor_config.cpp.enable_kernel_profile = True  # a profiler record per generated kernel
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * len(STAGES))
    print("\n".join(provenance()))
    print(f"{'stage shape':>22}  {'resnet50 ms':>11}  {'eca ms':>7}  {'extra ms':>8}")
    total = 0.0
    for channels, size, blocks, k in STAGES:
        times = kernel_times(args, channels, size, k)
        base, eca = (sum(times[name].values()) for name in VARIANTS)
        total += blocks * (eca - base)
        shape = f"({args.batch_size}, {channels}, {size}, {size})"
        print(f"{shape:>22}  {base:11.3f}  {eca:7.3f}  {eca - base:+8.3f}")
        if args.kernels:
            for name, counter in times.items():
                print(f"    {name}: " + ", ".join(f"{kernel} {ms:.3f}" for kernel, ms in counter.most_common()))
    print(f"extra per compiled inference step (3, 4, 6, 3 blocks, convolutions excluded): {total:+.1f} ms")


if __name__ == "__main__":
    main()
