"""Segmentation training configuration: the shared loop's fields (``LoopConfig``) with torchvision's
segmentation reference as defaults (SGD, lr 0.02 for a global batch of 32 - its 8 GPUs x 4 images -,
momentum 0.9, weight decay 1e-4, poly decay, auxiliary loss for DeepLabV3/FCN, 30 epochs), plus the
segmenter, backbone and data."""

from __future__ import annotations

from dataclasses import dataclass

from ..training.config import LoopConfig, option


@dataclass
class SegmentConfig(LoopConfig):
    model: str = option(
        "deeplabv3", 'deeplabv3 | fcn | unet | fpn | deeplabv3plus (these three: "segmentation" extra) | canet'
    )
    output: str = option("runs/segment", "output folder (checkpoints, metrics.jsonl, curves.png, summary.json)")
    epochs: int = option(30, "epochs to train (the reference: 30)")
    batch_size: int = option(4, "images per process")
    base_lr: float = option(0.02, "learning rate per base-batch images (linear scaling rule)")
    base_batch: int = option(32, "the global batch that base-lr is given for (the reference: 8 x 4)")
    weight_decay: float = option(1e-4, "weight decay")
    schedule: str = option("poly", "poly | step | multistep | cosine | exponential | constant")
    backbone: str = option("eca_resnet50", "zoo model (default eca_resnet50)")
    backbone_weights: str | None = option(
        None, "ImageNet weights of the backbone (ours, the authors' or torchvision's)"
    )
    num_classes: int | None = option(None, "classes incl. background (default: largest mask value + 1; VOC 21)")
    output_stride: int | None = option(None, "8 | 16 | 32 (default: 8 DeepLabV3/FCN, 16 DeepLabV3+, 32 U-Net/FPN)")
    aux_loss: bool = option(True, "DeepLabV3/FCN: auxiliary head on the stage before the last, weight 0.5")
    channel_attention: str | None = option("canet", "CA-Net's channel attention: canet | eca | se | cbam | none")
    width: int = option(16, "CA-Net's base width (the encoder's widths: 1, 2, 4, 8, 16 times it)")
    scales: int = option(4, "CA-Net: decoder scales weighed by scale attention (1 to 4)")
    spatial_attention: bool = option(True, "CA-Net: non-local block and attention gates (--no-...: without)")
    scale_attention: bool = option(True, "CA-Net: scale attention (--no-...: the finest decoder stage classifies)")
    loss: str = option("ce", 'ce | dice | ce+dice (Dice: the "segmentation" extra)')
    ignore_index: int = option(255, "mask value left out of loss and metrics (VOC's borders: 255)")
    images: str | None = option(None, "training images folder")
    masks: str | None = option(None, "training masks folder (PNG, class index per pixel, matched by file stem)")
    val_images: str | None = option(None, "validation images folder (default: the training one)")
    val_masks: str | None = option(None, "validation masks folder (default: the training one)")
    voc: str | None = option(None, "a VOC root (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/) instead")
    masks_as: str = option("classes", "classes | foreground (instance masks 0, 1..N as background / object)")
    image_size: int = option(480, "training crop and evaluation side (the reference: 480)")
