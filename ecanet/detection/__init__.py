"""Object detection and instance segmentation with ECA backbones."""

from .config import DetectConfig
from .models import KINDS, create_detector, load_detector, resnet_fpn

__all__ = ["KINDS", "DetectConfig", "create_detector", "load_detector", "resnet_fpn"]
# Data, training and evaluation need pycocotools (the "detection" extra): import them from
# ecanet.detection.data / .train / .evaluate. Building, loading and drawing predictions (.predict) do not.
