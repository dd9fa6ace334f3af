"""Segmenters with plain and ECA backbones side by side: params, MACs and inference img/s at one size.

    python benchmarks/segmentation.py --size 512 --repeats 3
    python benchmarks/segmentation.py --kinds deeplabv3 unet --backbones resnet18 eca_resnet18

MACs (multiply-accumulates, as the paper counts) come from torch.utils.flop_counter on one forward pass in
eval mode (ecanet.complexity); timings are medians of interleaved repeats over every model (batch 1); the
last column is img/s relative to the same segmenter over the first backbone. No assertions.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from ecanet.complexity import complexity
from ecanet.segmentation import KINDS, create_segmenter
from ecanet.studies.table import render_table
from ecanet.studies.timing import interleaved, provenance


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", nargs="+", default=list(KINDS))
    p.add_argument("--backbones", nargs="+", default=["resnet50", "eca_resnet50"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    image = torch.rand(1, 3, args.size, args.size)
    models = {(k, b): create_segmenter(k, b, args.num_classes).eval() for k in args.kinds for b in args.backbones}
    costs = {key: complexity(m, (3, args.size, args.size)) for key, m in models.items()}
    with torch.no_grad():
        seconds = interleaved({key: (lambda m=m: m(image)) for key, m in models.items()}, args.repeats, warmup=1)
    ips = {key: 1 / statistics.median(ts) for key, ts in seconds.items()}
    body = []
    for (kind, backbone), cost in costs.items():
        body.append(
            [
                kind,
                backbone,
                f"{models[(kind, backbone)].config['output_stride']}",
                f"{cost['params'] / 1e6:.3f}",
                f"{cost['attention_params']}",
                f"{cost['macs'] / 1e9:.2f}",
                f"{(cost['attention_macs'] + cost['attention_extra_ops']) / 1e6:.2f}",
                f"{ips[(kind, backbone)]:.3f}",
                f"{ips[(kind, backbone)] / ips[(kind, args.backbones[0])]:.3f}",
            ]
        )
    print("\n".join(provenance()))
    print(
        f"{args.size}x{args.size}, batch 1, eval, fp32, {args.num_classes} classes, {args.repeats} interleaved repeats"
    )
    header = ["segmenter", "backbone", "output stride", "params (M)", "attention params", "GMACs"]
    header += ["attention MMACs+ops", "img/s", "x"]
    print(render_table(header, body))


if __name__ == "__main__":
    main()
