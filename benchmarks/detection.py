"""Detectors with plain and ECA backbones side by side: params, FLOPs at one image size, inference img/s.

    python benchmarks/detection.py --size 800 1333 --repeats 3
    python benchmarks/detection.py --kinds retinanet --backbones resnet50 eca_resnet50 resnet101 eca_resnet101

FLOPs (multiply-accumulates, as the paper counts) come from torch.utils.flop_counter on one forward pass in
eval mode, for the backbone with its FPN and for the whole detector; timings are medians of interleaved repeats (A B A B ...). No assertions.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.utils.flop_counter import FlopCounterMode

from ecanet.detection import create_detector
from ecanet.table import render_table
from ecanet.timing import interleaved, provenance


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", nargs="+", default=["faster_rcnn", "mask_rcnn", "retinanet"])
    p.add_argument("--backbones", nargs="+", default=["resnet50", "eca_resnet50"])
    p.add_argument("--size", type=int, nargs=2, default=[800, 1333], metavar=("H", "W"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    h, w = args.size
    image = [torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))]
    models = {
        (k, b): create_detector(k, b, min_size=min(h, w), max_size=max(h, w)).eval()
        for k in args.kinds
        for b in args.backbones
    }
    rows = {}
    with torch.no_grad():
        for key, model in models.items():
            batch = model.transform(image)[0].tensors  # resized and padded as the detector sees it
            backbone, total = FlopCounterMode(display=False), FlopCounterMode(display=False)
            with backbone:
                model.backbone(batch)
            with total:
                model(image)
            rows[key] = [
                sum(p.numel() for p in model.parameters()),
                backbone.get_total_flops() // 2,
                total.get_total_flops() // 2,
            ]
        seconds = interleaved({key: (lambda m=model: m(image)) for key, model in models.items()}, args.repeats)
        times = {key: [1 / t for t in ts] for key, ts in seconds.items()}
    body = []
    for (kind, backbone), (params, body_macs, macs) in rows.items():
        base = statistics.median(times[(kind, args.backbones[0])])
        ips = statistics.median(times[(kind, backbone)])
        body.append(
            [
                kind,
                backbone,
                f"{params / 1e6:.3f}",
                f"{body_macs / 1e9:.2f}",
                f"{macs / 1e9:.2f}",
                f"{ips:.3f}",
                f"{ips / base:.3f}",
            ]
        )
    print("\n".join(provenance()))
    print(f"{h}x{w}, batch 1, eval, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("Total GMACs include the heads, whose work depends on how many proposals survive (random weights here).")
    header = ["detector", "backbone", "params (M)", "backbone+FPN GMACs", "total GMACs", "img/s", "x"]
    print(render_table(header, body))


if __name__ == "__main__":
    main()
