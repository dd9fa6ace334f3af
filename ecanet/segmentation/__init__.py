"""Semantic segmentation with the zoo's backbones: torchvision's DeepLabV3 / FCN heads and
segmentation-models-pytorch's U-Net / FPN / DeepLabV3+, trained on the shared loop."""

from .config import SegmentConfig
from .metrics import confusion_matrix, segmentation_scores
from .models import KINDS, create_segmenter, load_segmenter
from .predict import predict_masks
from .train import evaluate_segmenter, train_segmenter

__all__ = [
    "KINDS",
    "SegmentConfig",
    "confusion_matrix",
    "create_segmenter",
    "evaluate_segmenter",
    "load_segmenter",
    "predict_masks",
    "segmentation_scores",
    "train_segmenter",
]
