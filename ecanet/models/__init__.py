"""The paper's backbones: ResNet-18/34/50/101/152, CIFAR ResNets and MobileNetV2, with any attention."""

from ..layers.fused import plain_formulation, set_fused
from .mobilenetv2 import MobileNetV2
from .norm import freeze_batchnorm
from .registry import ARCHS, create_model, list_models, parse_model_name, stage_kernel_sizes
from .resnet import BasicBlock, Bottleneck, ResNet

__all__ = [
    "ARCHS",
    "BasicBlock",
    "Bottleneck",
    "MobileNetV2",
    "ResNet",
    "create_model",
    "freeze_batchnorm",
    "list_models",
    "parse_model_name",
    "plain_formulation",
    "set_fused",
    "stage_kernel_sizes",
]
