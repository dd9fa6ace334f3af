"""The ``ecanet`` command (also ``python -m ecanet``)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from pathlib import Path

import torch

from .engine import TrainingError
from .export import ExportError
from .info import format_table, info_table
from .models import parse_model_name


def _positive_int(value: str) -> int:
    """argparse type: an int >= 1 (argparse names the flag in its error)."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _info(args: argparse.Namespace) -> None:
    rows = info_table(args.models or None, args.image_size)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        size = f"{args.image_size}x{args.image_size}" if args.image_size else "224x224 (CIFAR models: 32x32)"
        print(f"Per-image cost at {size}; FLOPs in the paper's sense (multiply-accumulates)")
        print(format_table(rows))


def _bench(args: argparse.Namespace) -> None:
    from .bench import REFERENCE_MODELS, BenchConfig, format_rows, plot_rows, run_bench

    models = args.models + (REFERENCE_MODELS if args.include_reference else [])
    if args.include_reference and importlib.util.find_spec("timm") is None:
        models = [m for m in models if not m.startswith("timm:")]
        print("timm is not installed: timm:eca_resnet50 left out", file=sys.stderr)
    cfg = BenchConfig(
        models=models,
        batch_size=args.batch_size,
        image_size=args.image_size,
        device=args.device,
        dtype=args.dtype,
        channels_last=args.channels_last,
        compile=args.compile,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        memory=not (args.no_memory or args.inference_only),
        memory_repeats=args.memory_repeats,
        train=not args.inference_only,
    )
    rows = run_bench(cfg, log=lambda msg: print(msg, file=sys.stderr))
    threads = torch.get_num_threads()
    print(
        f"batch {cfg.batch_size}, {cfg.image_size}x{cfg.image_size}, {cfg.device}, {cfg.dtype}, "
        f"{'channels_last' if cfg.channels_last else 'NCHW'}, {'compiled' if cfg.compile else 'eager'}, "
        f"{threads} threads, {cfg.repeats} interleaved repeats{'' if cfg.train else ', inference only'}; "
        f"torch {torch.__version__}"
    )
    print(format_rows(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.plot:
        plot_rows(rows, args.plot)


TRAIN_HELP = {
    "model": "zoo model name (default eca_resnet20)",
    "data": "ImageFolder root with train/ and val/ (default: the embedded digits dataset)",
    "train_dir": "training folder, if not DATA/train",
    "val_dir": "validation folder, if not DATA/val",
    "output": "output folder (checkpoints, metrics.jsonl, curves.png, summary.json)",
    "recipe": "paper | paper-mobilenet | modern: the recipe's values become the defaults",
    "batch_size": "per process",
    "lr": "absolute learning rate (default: base-lr x global batch / base-batch)",
    "resume": "checkpoint to resume; with no value, OUT/checkpoint.pt",
    "pretrained": "weights to start from: ours, the authors' .pth.tar or torchvision's",
    "num_classes": "default: the number of class folders",
    "freeze_stages": "freeze the stem and this many stages",
    "eca_k": "released | adaptive | one odd int per stage",
    "amp": "mixed precision: bf16 on CPU, fp16 (with grad scaling) on CUDA",
    "compare": "other models trained the same way, reported side by side (no names: none)",
}


CLASSIFICATION_ONLY = {  # TrainConfig fields a detector does not use: no detection flag for them
    "data",
    "train_dir",
    "val_dir",
    "eca_k",
    "compare",
    "recipe",
    "image_size",
    "label_smoothing",
    "augment",
    "pretrained",
    "num_classes",
    "freeze_stages",
    "channels_last",
    "sync_bn",
    "freeze_bn",
}
OPTIONAL_TYPES = {"lr": float, "num_classes": int, "image_size": int}  # fields whose default is None


def _add_train_flags(p: argparse.ArgumentParser, helps: dict | None = None, detection: bool = False) -> None:
    """One flag per config field, all defaulting to None so that recipe and --config values apply."""
    from dataclasses import fields

    from .config import TrainConfig

    if detection:
        from .detection.train import DetectConfig as config_class
    else:
        config_class = TrainConfig
    helps = {**TRAIN_HELP, **(helps or {})}
    p.add_argument("--config", help="a saved OUT/config.json to start from (flags override it)")
    for f in fields(config_class):
        if detection and f.name in CLASSIFICATION_ONLY:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default) if f.default is not None and not callable(f.default_factory) else None
        help_text = helps.get(f.name)
        if f.name == "resume":
            p.add_argument(flag, nargs="?", const="", default=None, help=help_text)
        elif f.name in ("backbone_weights", "images", "annotations", "val_images", "val_annotations"):
            p.add_argument(flag, default=None, help=help_text)
        elif f.name == "milestones":
            p.add_argument(flag, type=int, nargs="+", default=None, help="multistep: epochs at which the lr decays")
        elif f.name in ("compare", "eca_k"):
            p.add_argument(flag, nargs="*" if f.name == "compare" else "+", default=None, help=help_text)
        elif kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name in OPTIONAL_TYPES:
            p.add_argument(flag, type=OPTIONAL_TYPES[f.name], default=None, help=help_text)
        else:
            p.add_argument(flag, type=kind or str, default=None, help=help_text)


def _parse_eca_k(values: list[str]) -> str | list[int]:
    if len(values) == 1 and values[0] in ("released", "adaptive"):
        return values[0]
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--eca-k: expected 'released', 'adaptive' or odd ints, got {' '.join(values)}") from None


def _train(args: argparse.Namespace) -> None:
    from .classification import format_comparison, train
    from .config import FIELDS, resolve

    overrides = {k: v for k, v in vars(args).items() if k in FIELDS}
    if overrides.get("eca_k"):
        overrides["eca_k"] = _parse_eca_k(overrides["eca_k"])
    cfg = resolve(config_file=args.config, **overrides)
    if cfg.data is None and cfg.train_dir is None and args.compare is None:
        attn, arch = parse_model_name(cfg.model)
        if attn is not None:  # the embedded default: the same network without attention, and with SE, alongside
            cfg.compare = [m for m in (arch, "se_" + arch) if m != cfg.model]
    summary = train(cfg)
    if "comparison" in summary:
        print(f"{summary['data']}, {cfg.epochs} epochs, seed {cfg.seed}: test top-1 after the last and the best epoch")
        print(format_comparison(summary["comparison"]))
    else:
        print(json.dumps(summary, indent=2))


def _eval(args: argparse.Namespace) -> None:
    from .classification import evaluate, load_for_eval

    model = load_for_eval(args.weights, args.model, args.num_classes)
    val_dir = args.val_dir or (str(Path(args.data) / "val") if args.data else None)
    if val_dir is None:
        raise ValueError("--data or --val-dir is required")
    result = evaluate(model, val_dir, args.image_size, args.batch_size, args.workers, args.device)
    print(json.dumps(result, indent=2))


def _ablate_k(args: argparse.Namespace) -> None:
    from .ablation import ablate_k, format_ablation
    from .config import FIELDS, resolve

    overrides = {k: v for k, v in vars(args).items() if k in FIELDS and k not in ("eca_k", "compare")}
    overrides["model"] = args.model or "resnet20"
    overrides["output"] = args.output or "runs/ablate_k"
    rows = ablate_k(resolve(config_file=args.config, **overrides), args.ks, args.seeds)
    print(format_ablation(rows))


def _viz_model(args: argparse.Namespace):
    from .models import create_model
    from .weights import load_checkpoint

    if args.weights is None:
        raise ValueError("--weights is required (a figure of random weights shows nothing)")
    if args.model is None:
        return load_checkpoint(args.weights)
    return load_checkpoint(args.weights, model=create_model(args.model, num_classes=args.num_classes))


def _viz(args: argparse.Namespace) -> None:
    from .viz import attention_figures, cam_figures

    model = _viz_model(args)
    if args.kind == "attention":
        written = attention_figures(model, args.images, args.output, args.image_size)
    else:
        written = cam_figures(model, args.layer, args.images, args.output, args.image_size, args.cls)
    for path in written:
        print(path)


def _report(args: argparse.Namespace) -> None:
    from .report import build_report

    print(build_report(args.run))


DETECT_HELP = {
    "model": "faster_rcnn | mask_rcnn | retinanet",
    "backbone": "zoo ImageNet ResNet (default eca_resnet50)",
    "backbone_weights": "ImageNet weights of the backbone (ours, the authors' or torchvision's)",
    "images": "training images folder",
    "annotations": "training instances JSON (COCO format)",
    "val_images": "validation images folder (default: the training one)",
    "val_annotations": "validation instances JSON (default: the training one)",
    "min_size": "shorter image side (default 800)",
    "max_size": "longer image side at most (default 1333)",
}


def _detect(args: argparse.Namespace) -> None:
    if args.action == "convert-masks":
        from .detection.data import convert_masks

        coco = convert_masks(args.images, args.masks, args.output)
        print(f"wrote {args.output}: {len(coco['images'])} images, {len(coco['annotations'])} instances")
        return
    if args.action == "train":
        from dataclasses import fields

        from .config import load_config_file
        from .detection.train import DetectConfig, train_detector

        names = {f.name for f in fields(DetectConfig)}
        values = load_config_file(args.config) if args.config else {}
        values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
        values.setdefault("output", "runs/detect")
        print(json.dumps(train_detector(DetectConfig(**values)), indent=2))
        return
    from .detection.train import load_detector

    model = load_detector(args.weights)
    if args.action == "eval":
        from .detection.data import CocoDetection
        from .detection.evaluate import coco_evaluate

        data = CocoDetection(args.images, args.annotations, masks=model.config["kind"] == "mask_rcnn")
        print(json.dumps(coco_evaluate(model, data, args.batch_size), indent=2))
    else:
        from .detection.predict import predict

        rows = predict(model, args.images, args.output, args.score_threshold)
        print(f"{sum(len(r['scores']) for r in rows)} detections in {len(rows)} images written to {args.output}")


def _export(args: argparse.Namespace) -> None:
    from .export import export_model
    from .models import create_model
    from .weights import load_checkpoint

    if args.weights is None and args.model is None:
        raise ValueError("--model or --weights is required")
    if args.weights is None:
        logging.getLogger("ecanet").warning("no --weights: exporting %s with fresh random weights", args.model)
        model = create_model(args.model, num_classes=args.num_classes)
    elif args.model is None:
        model = load_checkpoint(args.weights)
    else:
        model = load_checkpoint(args.weights, model=create_model(args.model, num_classes=args.num_classes))
    result = export_model(model, args.output, args.format, args.image_size, args.tolerance)
    print(
        f"wrote {result['path']} ({result['format']}); largest absolute difference to PyTorch: {result['max_abs_diff']:.3g}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecanet", description="ECA-Net: Efficient Channel Attention toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="complexity table of zoo models (params, FLOPs, attention cost, k per stage)")
    p.add_argument("models", nargs="*", help="model names (default: every ImageNet model)")
    p.add_argument("--image-size", type=int, default=None, help="input side (default 224; 32 for CIFAR models)")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(func=_info)

    from .bench import DEFAULT_MODELS

    p = sub.add_parser("bench", help="throughput and memory of models side by side, interleaved repeats")
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="zoo names, NAME:plain or timm:eca_resnet50")
    p.add_argument("--include-reference", action="store_true", help="add eca_resnet50:plain and timm's ECA")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--image-size", type=_positive_int, default=224)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="autocast dtype")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile every model (compiled once, untimed)")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch.set_num_threads")
    p.add_argument("--repeats", type=_positive_int, default=5, help="timed repeats per model (interleaved)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument(
        "--memory-repeats",
        type=_positive_int,
        default=1,
        help="fresh subprocesses per model for the peak memory; the smallest peak is reported",
    )
    p.add_argument(
        "--inference-only",
        action="store_true",
        help="time inference only, with no training step in the process (as in deployment); implies --no-memory",
    )
    p.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write a bar chart of the ratios")
    p.set_defaults(func=_bench)

    p = sub.add_parser("train", help="train a classifier (default: the embedded digits dataset)")
    _add_train_flags(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="top-1, top-5 and loss of weights on an image folder")
    p.add_argument("--weights", required=True, help="weights file (any format load_checkpoint reads)")
    p.add_argument("--model", help="zoo model to load into (default: rebuilt from the file)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--data", help="ImageFolder root; its val/ folder is evaluated")
    p.add_argument("--val-dir", help="the folder to evaluate, if not DATA/val")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default=None)
    p.set_defaults(func=_eval)

    p = sub.add_parser("ablate-k", help="the paper's kernel-size study: k = 3, 5, 7, 9, adaptive, SE, none")
    _add_train_flags(p)
    p.add_argument("--ks", type=int, nargs="+", default=[3, 5, 7, 9], help="fixed kernel sizes to try")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed and setting")
    p.set_defaults(func=_ablate_k)

    viz = sub.add_parser("viz", help="figures: channel attention per layer, Grad-CAM heatmaps")
    kinds = viz.add_subparsers(dest="kind", required=True)
    for kind, text in [
        ("attention", "ECA/SE channel weights per layer, per image and across images"),
        ("cam", "Grad-CAM heatmaps over the images"),
    ]:
        p = kinds.add_parser(kind, help=text)
        p.add_argument("images", nargs="+", help="image files")
        p.add_argument("--weights", help="weights file (any format load_checkpoint reads)")
        p.add_argument("--model", help="zoo model (default: rebuilt from --weights)")
        p.add_argument("--num-classes", type=int, default=None)
        p.add_argument("--output", default="viz", help="folder for the PNG files")
        p.add_argument("--image-size", type=int, default=224)
        if kind == "cam":
            p.add_argument("--layer", default="layer4", help="module whose activations are weighted (default layer4)")
            p.add_argument("--class", dest="cls", type=int, default=None, help="class to explain (default: top-1)")
        p.set_defaults(func=_viz)

    p = sub.add_parser("report", help="a training output folder as one self-contained HTML page")
    p.add_argument("run", help="the training output folder (OUT of ecanet train)")
    p.set_defaults(func=_report)

    detect = sub.add_parser("detect", help="detection and instance segmentation with ECA backbones (COCO format)")
    actions = detect.add_subparsers(dest="action", required=True)
    p = actions.add_parser("train", help="train Faster R-CNN, Mask R-CNN or RetinaNet")
    _add_train_flags(p, DETECT_HELP, detection=True)
    p.set_defaults(func=_detect)
    p = actions.add_parser("eval", help="COCO AP of detector weights")
    p.add_argument("--weights", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--annotations", required=True)
    p.add_argument("--batch-size", type=int, default=2)
    p.set_defaults(func=_detect)
    p = actions.add_parser("predict", help="draw detections on images and write them as JSON")
    p.add_argument("images", nargs="+")
    p.add_argument("--weights", required=True)
    p.add_argument("--output", default="predictions")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.set_defaults(func=_detect)
    p = actions.add_parser("convert-masks", help="images + instance-mask PNGs to a COCO instances JSON")
    p.add_argument("--images", required=True)
    p.add_argument("--masks", required=True)
    p.add_argument("--output", required=True)
    p.set_defaults(func=_detect)

    p = sub.add_parser("export", help="export to ONNX or TorchScript and check it against PyTorch")
    p.add_argument("--model", help="zoo model (default: rebuilt from --weights)")
    p.add_argument("--weights", help="weights file (any format load_checkpoint reads)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--output", required=True, help="file to write (.onnx or .pt)")
    p.add_argument("--image-size", type=int, default=224, help="side of the sample batch used for the check")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest absolute difference allowed")
    p.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, TrainingError, ExportError) as e:
        print(f"ecanet {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
