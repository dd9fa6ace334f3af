"""Object detection and instance segmentation with ECA backbones."""

from .models import KINDS, create_detector, resnet_fpn

__all__ = ["KINDS", "create_detector", "resnet_fpn"]
