"""``ecanet segment``: semantic segmentation with ECA backbones (train, eval, predict)."""

from __future__ import annotations

import argparse
import json

from ..segmentation.config import SegmentConfig
from .flags import add_config_flags, file_and_flags, positive_int


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", help="images folder")
    p.add_argument("--masks", help="masks folder (PNG, class index per pixel, matched by file stem)")
    p.add_argument("--voc", help="a VOC root instead (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)")
    p.add_argument("--split", default="val", help="--voc: the ImageSets/Segmentation list (default val)")
    p.add_argument("--masks-as", default="classes", help="classes | foreground (instance masks as 0/1)")
    p.add_argument("--ignore-index", type=int, default=255, help="mask value left out of the metrics")


def add_parser(sub) -> None:
    segment = sub.add_parser("segment", help="semantic segmentation with ECA backbones")
    actions = segment.add_subparsers(dest="action", required=True)
    p = actions.add_parser("train", help='train DeepLabV3 / FCN (or U-Net / FPN / DeepLabV3+: "segmentation" extra)')
    add_config_flags(p, SegmentConfig)
    p.set_defaults(func=train)
    p = actions.add_parser("compare", help="segmenters trained alike for several seeds: Dice and mIoU with intervals")
    add_config_flags(p, SegmentConfig)
    p.add_argument(
        "--arm", action="append", nargs="+", required=True, metavar="LABEL [KEY=VALUE ...]",
        help="a model of the comparison: a label and the settings it changes (e.g. --arm eca channel_attention=eca)",
    )  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of every arm (default 0 1 2)")
    p.set_defaults(func=compare)
    p = actions.add_parser("eval", help="mIoU, Dice and pixel accuracy of segmenter weights (torchrun: sharded)")
    p.add_argument("--weights", required=True)
    _data_flags(p)
    p.add_argument("--image-size", type=positive_int, default=480)
    p.add_argument("--batch-size", type=positive_int, default=4)
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--device", default=None)
    p.set_defaults(func=evaluate)
    p = actions.add_parser("predict", help="write raw mask PNGs and colour overlays of images")
    p.add_argument("images", nargs="+")
    p.add_argument("--weights", required=True)
    p.add_argument("--output", default="predictions")
    p.add_argument("--image-size", type=positive_int, default=480)
    p.set_defaults(func=predict)


def train(args: argparse.Namespace) -> None:
    from ..segmentation.train import train_segmenter

    print(json.dumps(train_segmenter(file_and_flags(args, SegmentConfig)), indent=2))


def compare(args: argparse.Namespace) -> None:
    from ..segmentation.compare import METRICS, compare_segmenters, parse_arm
    from ..studies.comparison import format_comparison

    arms = [parse_arm(words) for words in args.arm]
    print(format_comparison(compare_segmenters(file_and_flags(args, SegmentConfig), arms, args.seeds), METRICS))


def evaluate(args: argparse.Namespace) -> None:
    from ..segmentation.data import SegmentationData, check_masks, eval_transform, folder_pairs, voc_pairs
    from ..segmentation.models import load_segmenter
    from ..segmentation.train import evaluate_segmenter
    from ..training.distributed import process_group

    if bool(args.voc) == bool(args.images or args.masks):
        raise ValueError("give --voc DIR, or --images DIR and --masks DIR")
    model = load_segmenter(args.weights)
    pairs = voc_pairs(args.voc, args.split) if args.voc else folder_pairs(args.images, args.masks)
    check_masks(pairs, args.masks_as, args.ignore_index, model.config["num_classes"])
    data = SegmentationData(pairs, eval_transform(args.image_size), args.masks_as)
    with process_group(args.device) as proc:
        metrics = evaluate_segmenter(model, data, args.batch_size, args.workers, proc, ignore_index=args.ignore_index)
    if proc.is_main:
        print(json.dumps(metrics, indent=2))


def predict(args: argparse.Namespace) -> None:
    from ..segmentation.models import load_segmenter
    from ..segmentation.predict import predict_masks

    rows = predict_masks(load_segmenter(args.weights), args.images, args.output, args.image_size)
    print(f"{len(rows)} masks and overlays written to {args.output}")
