"""Object detection and instance segmentation with ECA backbones."""

from .models import KINDS, create_detector, resnet_fpn

__all__ = ["KINDS", "create_detector", "resnet_fpn"]
# Data, training, evaluation and prediction need pycocotools (the "detection" extra): import them from
# ecanet.detection.data / .train / .evaluate / .predict.
