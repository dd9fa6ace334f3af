"""``ecanet export``: ONNX, a torch.export program or TorchScript, checked against PyTorch."""

from __future__ import annotations

import argparse
import logging

from ..export import FORMATS
from .evaluate import add_weights_flags
from .flags import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX, torch.export (.pt2) or TorchScript, checked against PyTorch")
    add_weights_flags(p)
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="onnx",
        help='onnx (the "export" extra), exported (torch.export, .pt2) or torchscript (for older runtimes)',
    )
    p.add_argument("--output", required=True, help="file to write (.onnx, .pt2 or .pt)")
    p.add_argument("--image-size", type=positive_int, default=224, help="side of the sample batch used for the check")
    p.add_argument(
        "--dynamic-size", action="store_true", help="dynamic height and width too (checked at a second size)"
    )
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest absolute difference allowed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..export import export_model
    from ..models import create_model
    from ..weights import load_checkpoint

    if args.weights is None and args.model is None:
        raise ValueError("--model or --weights is required")
    if args.weights is None:
        logging.getLogger("ecanet").warning("no --weights: exporting %s with fresh random weights", args.model)
        model = create_model(args.model, num_classes=args.num_classes)
    else:
        model = load_checkpoint(args.weights, args.model, num_classes=args.num_classes)
    result = export_model(model, args.output, args.format, args.image_size, args.tolerance, args.dynamic_size)
    sizes = ", ".join(f"{s}x{s}" for s in result["sizes"])
    print(
        f"wrote {result['path']} ({result['format']}); largest absolute difference to PyTorch at {sizes}: "
        f"{result['max_abs_diff']:.3g}"
    )
