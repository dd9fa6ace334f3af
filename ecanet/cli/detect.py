"""``ecanet detect``: detection and instance segmentation with ECA backbones, on COCO-format data."""

from __future__ import annotations

import argparse
import json

from ..detection.config import DetectConfig
from .flags import add_config_flags, file_and_flags, positive_int


def add_parser(sub) -> None:
    detect = sub.add_parser("detect", help="detection and instance segmentation with ECA backbones (COCO format)")
    actions = detect.add_subparsers(dest="action", required=True)
    p = actions.add_parser("train", help='train Faster R-CNN, Mask R-CNN or RetinaNet (the "detection" extra)')
    add_config_flags(p, DetectConfig)
    p.set_defaults(func=train)
    p = actions.add_parser("eval", help='COCO AP of detector weights (the "detection" extra)')
    p.add_argument("--weights", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--annotations", required=True)
    p.add_argument("--batch-size", type=positive_int, default=2)
    p.set_defaults(func=evaluate)
    p = actions.add_parser("predict", help="draw detections on images and write them as JSON")
    p.add_argument("images", nargs="+")
    p.add_argument("--weights", required=True)
    p.add_argument("--output", default="predictions")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.set_defaults(func=predict)
    p = actions.add_parser("convert-masks", help='images + instance-mask PNGs to a COCO instances JSON ("detection")')
    p.add_argument("--images", required=True)
    p.add_argument("--masks", required=True)
    p.add_argument("--output", required=True)
    p.set_defaults(func=convert_masks)


def train(args: argparse.Namespace) -> None:
    from ..detection.train import train_detector

    print(json.dumps(train_detector(file_and_flags(args, DetectConfig)), indent=2))


def evaluate(args: argparse.Namespace) -> None:
    from ..detection.data import CocoDetection
    from ..detection.evaluate import coco_evaluate
    from ..detection.models import load_detector

    model = load_detector(args.weights)
    data = CocoDetection(args.images, args.annotations, masks=model.config["kind"] == "mask_rcnn")
    print(json.dumps(coco_evaluate(model, data, args.batch_size), indent=2))


def predict(args: argparse.Namespace) -> None:
    from ..detection.models import load_detector
    from ..detection.predict import predict

    rows = predict(load_detector(args.weights), args.images, args.output, args.score_threshold)
    print(f"{sum(len(r['scores']) for r in rows)} detections in {len(rows)} images written to {args.output}")


def convert_masks(args: argparse.Namespace) -> None:
    from ..detection.data import convert_masks

    coco = convert_masks(args.images, args.masks, args.output)
    print(f"wrote {args.output}: {len(coco['images'])} images, {len(coco['annotations'])} instances")
