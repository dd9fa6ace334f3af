"""Detection training configuration: the shared loop's fields (``LoopConfig``) with the 1x schedule as
defaults (12 epochs, SGD lr 0.02 per 16 images, momentum 0.9, weight decay 1e-4, lr / 10 at epochs 8 and
11, linear warmup), plus the detector, backbone and COCO data. Needs no optional package."""

from __future__ import annotations

from dataclasses import dataclass

from ..training.config import LoopConfig, option


@dataclass
class DetectConfig(LoopConfig):
    model: str = option("faster_rcnn", "faster_rcnn | mask_rcnn | retinanet")
    output: str = option("runs/detect", "output folder (checkpoints, metrics.jsonl, curves.png, summary.json)")
    epochs: int = option(12, "epochs to train (the 1x schedule: 12)")
    batch_size: int = option(2, "images per process")
    base_lr: float = option(0.02, "learning rate per base-batch images (linear scaling rule)")
    base_batch: int = option(16, "the global batch that base-lr is given for")
    weight_decay: float = option(1e-4, "weight decay")
    schedule: str = option("multistep", "step | multistep | cosine | exponential | poly | constant")
    milestones: list[int] = option(help="multistep: epochs at which the lr decays", factory=lambda: [8, 11])
    warmup_epochs: float = option(0.1, "linear warmup, in (fractional) epochs (0.1: about 700 COCO iterations)")
    cudnn_benchmark: bool = option(False, "CUDA: let cuDNN pick convolutions per input size (sizes vary here)")
    backbone: str = option("eca_resnet50", "zoo ImageNet ResNet (default eca_resnet50)")
    backbone_weights: str | None = option(
        None, "ImageNet weights of the backbone (ours, the authors' or torchvision's)"
    )
    trainable_layers: int = option(3, "backbone stages trained, counted from the last (0..5)")
    images: str | None = option(None, "training images folder")
    annotations: str | None = option(None, "training instances JSON (COCO format)")
    val_images: str | None = option(None, "validation images folder (default: the training one)")
    val_annotations: str | None = option(None, "validation instances JSON (default: the training one)")
    min_size: int = option(800, "shorter image side (default 800)")
    max_size: int = option(1333, "longer image side at most (default 1333)")
