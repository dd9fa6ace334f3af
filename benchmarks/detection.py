"""Detectors with plain and ECA backbones side by side: params, FLOPs at one image size, inference img/s,
and with ``--train`` the img/s of a training step (forward, losses, backward, SGD) on the frozen-BatchNorm
backbones detection uses, and of the backbone with its FPN alone (forward and backward: the heads' work
depends on the proposals the features produce, so the whole step does not isolate the backbone).

    python benchmarks/detection.py --size 800 1333 --repeats 3
    python benchmarks/detection.py --kinds retinanet --backbones resnet50 eca_resnet50 resnet101 eca_resnet101
    python benchmarks/detection.py --kinds faster_rcnn --size 320 320 --train --repeats 9

FLOPs (multiply-accumulates, as the paper counts) come from torch.utils.flop_counter on one forward pass in
eval mode, for the backbone with its FPN and for the whole detector. Every detector of a kind starts from
the first backbone's random weights wherever names and shapes match (``share_weights``), so that the heads'
work is the same but for attention's effect on the features. Timings are medians of interleaved
repeats (A B A B ...), and a ratio is the median over repeats of the paired ratio to the first backbone.
No assertions.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.utils.flop_counter import FlopCounterMode

from ecanet.detection import create_detector
from ecanet.studies.bench import _paired_ratio
from ecanet.studies.table import render_table
from ecanet.studies.timing import interleaved, provenance


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", nargs="+", default=["faster_rcnn", "mask_rcnn", "retinanet"])
    p.add_argument("--backbones", nargs="+", default=["resnet50", "eca_resnet50"])
    p.add_argument("--size", type=int, nargs=2, default=[800, 1333], metavar=("H", "W"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train", action="store_true", help="also time a training step (two boxes, one image)")
    args = p.parse_args()
    h, w = args.size
    image = [torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))]
    models = {
        (k, b): create_detector(k, b, min_size=min(h, w), max_size=max(h, w)).eval()
        for k in args.kinds
        for b in args.backbones
    }
    for (kind, _), model in models.items():
        share_weights(models[(kind, args.backbones[0])], model)
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
    phases = {"infer": {key: [1 / t for t in ts] for key, ts in seconds.items()}}
    if args.train:
        steps = {key: training_step(model, image) for key, model in models.items()}
        seconds = interleaved(steps, args.repeats, warmup=1)
        phases["train"] = {key: [1 / t for t in ts] for key, ts in seconds.items()}
        # The heads' work depends on the proposals the features produce, so the whole step does not isolate
        # the backbone: time the backbone with its FPN alone too (forward + backward, frozen BatchNorm).
        steps = {key: backbone_step(model, image) for key, model in models.items()}
        seconds = interleaved(steps, args.repeats, warmup=1)
        phases["backbone train"] = {key: [1 / t for t in ts] for key, ts in seconds.items()}
    body = []
    for (kind, backbone), (params, body_macs, macs) in rows.items():
        body.append([kind, backbone, f"{params / 1e6:.3f}", f"{body_macs / 1e9:.2f}", f"{macs / 1e9:.2f}"])
        for times in phases.values():
            ratio = _paired_ratio(times[(kind, backbone)], times[(kind, args.backbones[0])])
            body[-1] += [f"{statistics.median(times[(kind, backbone)]):.3f}", f"{ratio:.3f}"]
    print("\n".join(provenance()))
    print(
        f"{h}x{w}, batch 1, {args.repeats} interleaved repeats, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("Total GMACs include the heads, whose work depends on how many proposals survive (random weights here).")
    header = ["detector", "backbone", "params (M)", "backbone+FPN GMACs", "total GMACs", "infer img/s", "x"]
    header += ["train img/s", "x", "backbone+FPN train img/s", "x"] if args.train else []
    print(render_table(header, body))


def share_weights(source: torch.nn.Module, model: torch.nn.Module) -> None:
    """Give ``model`` every weight of ``source`` with the same name and shape (all but attention's own).

    With independent random weights the heads of two detectors see different proposals and do different
    amounts of work (their total GMACs differ), which would be timed as the backbone's cost; with shared
    weights they differ only by what attention changes. (A benchmark's copy, not a trained file's load.)
    """
    own = model.state_dict()
    model.load_state_dict(
        {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}, strict=False
    )


def backbone_step(model: torch.nn.Module, image: list[torch.Tensor]):
    """Forward and backward of ``model``'s backbone with its FPN on ``image`` as the detector sees it."""
    model.train()
    batch = model.transform(image)[0].tensors

    def step() -> None:
        sum(f.float().mean() for f in model.backbone(batch).values()).backward()

    return step


def training_step(model: torch.nn.Module, image: list[torch.Tensor]):
    """One SGD step of ``model`` on ``image`` with two boxes (and their masks for Mask R-CNN)."""
    _, h, w = image[0].shape
    boxes = torch.tensor([[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.3 * h, 0.9 * w, 0.9 * h]])
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist(), strict=True):
        mask[y0:y1, x0:x1] = 1
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks}]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step() -> None:
        model.train()
        loss = sum(model(image, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


if __name__ == "__main__":
    main()
