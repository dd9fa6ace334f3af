"""``ecanet viz``: channel-attention strips, Grad-CAM heatmaps and CA-Net's attention maps."""

from __future__ import annotations

import argparse

from .evaluate import add_weights_flags, model_from_flags
from .flags import positive_int


def add_parser(sub) -> None:
    viz = sub.add_parser("viz", help="figures: channel attention per layer, Grad-CAM heatmaps")
    kinds = viz.add_subparsers(dest="kind", required=True)
    for kind, text in [
        ("attention", "ECA/SE channel weights per layer, per image and across images"),
        ("cam", 'Grad-CAM heatmaps over the images (the "viz" extra)'),
        ("canet", "CA-Net's spatial, scale and channel attention over the images (segmenter weights)"),
    ]:
        p = kinds.add_parser(kind, help=text)
        p.add_argument("images", nargs="+", help="image files")
        add_weights_flags(p)
        p.add_argument("--output", default="viz", help="folder for the PNG files")
        p.add_argument("--image-size", type=positive_int, default=224)
        if kind == "cam":
            p.add_argument("--layer", default="layer4", help="module whose activations are weighted (default layer4)")
            p.add_argument("--class", dest="cls", type=int, default=None, help="class to explain (default: top-1)")
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..studies.viz import attention_figures, cam_figures, canet_figures

    if args.weights is None:
        raise ValueError("--weights is required (a figure of random weights shows nothing)")
    if args.kind == "canet":
        from ..segmentation import load_segmenter

        for path in canet_figures(load_segmenter(args.weights), args.images, args.output, args.image_size):
            print(path)
        return
    model = model_from_flags(args)
    if args.kind == "attention":
        written = attention_figures(model, args.images, args.output, args.image_size)
    else:
        written = cam_figures(model, args.layer, args.images, args.output, args.image_size, args.cls)
    for path in written:
        print(path)
