"""Detectors with the zoo's ResNets as backbones, on torchvision's detection models (Section 4.2 of the
paper: Faster R-CNN, Mask R-CNN and RetinaNet with ECA-ResNet-50/101).

An FPN over the backbone's stage outputs (C2-C5 and a max-pooled P6 for the R-CNNs; C3-C5 plus P6/P7 for
RetinaNet), BatchNorm frozen in the backbone as is standard, and the first stages frozen
(``trainable_layers``).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from ..errors import CheckpointError
from ..models import ARCHS, ResNet, create_model, freeze_batchnorm, parse_model_name
from ..weights import FRESH_PARTS, load_state, read_weights

KINDS = ("faster_rcnn", "mask_rcnn", "retinanet")
_BUILDERS = {"faster_rcnn": FasterRCNN, "mask_rcnn": MaskRCNN, "retinanet": RetinaNet}


def resnet_fpn(backbone: ResNet, trainable_layers: int = 3, retinanet: bool = False) -> BackboneWithFPN:
    """FPN over a zoo ResNet. Same recipe as torchvision's (private) ``_resnet_fpn_extractor``, written here
    over the public ``BackboneWithFPN`` because that helper is not a public API."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    if trainable_layers < 5:  # as torchvision counts: the last stages train, then conv1, then bn1 too
        backbone.freeze_stages(4 - trainable_layers)
    stages = [2, 3, 4] if retinanet else [1, 2, 3, 4]
    return BackboneWithFPN(
        backbone,
        return_layers={f"layer{s}": str(i) for i, s in enumerate(stages)},
        in_channels_list=[backbone.feature_channels[s - 1] for s in stages],
        out_channels=256,
        extra_blocks=LastLevelP6P7(256, 256) if retinanet else LastLevelMaxPool(),
    )


def create_detector(
    kind: str,
    backbone: str = "eca_resnet50",
    num_classes: int = 91,
    backbone_weights: str | None = None,
    trainable_layers: int = 3,
    **kwargs,
) -> nn.Module:
    """A torchvision Faster R-CNN, Mask R-CNN or RetinaNet over zoo ResNet ``backbone`` (plain, SE, CBAM or
    ECA). ``backbone_weights``: ImageNet weights in any format ``load_checkpoint`` reads (the classifier is
    dropped). ``kwargs`` go to the torchvision model (e.g. ``min_size``, ``max_size``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown detector {kind!r}; choose one of {KINDS}")
    arch = ARCHS[parse_model_name(backbone)[1]]
    if (arch.family, arch.dataset) != ("resnet", "imagenet"):
        raise ValueError(f"--backbone: detectors take the ImageNet ResNets of the zoo, not {backbone}")
    net = create_model(backbone)
    if backbone_weights:
        load_state(net, read_weights(backbone_weights)[0], backbone_weights, fresh=FRESH_PARTS)
    freeze_batchnorm(net)
    fpn = resnet_fpn(net, trainable_layers, retinanet=kind == "retinanet")
    model = _BUILDERS[kind](fpn, num_classes=num_classes, **kwargs)
    model.config = {"model": kind, "kind": kind, "backbone": backbone, "num_classes": num_classes}
    return model


def load_detector(path: str | Path) -> nn.Module:
    """A detector saved by ``ecanet detect train`` (safetensors with kind, backbone, num_classes in metadata)."""
    state, meta = read_weights(path)
    if "kind" not in meta:
        raise CheckpointError(f"{path}: not detector weights (no detector kind in the metadata)")
    model = create_detector(meta["kind"], meta["backbone"], meta["num_classes"])
    model.load_state_dict(state)
    model.config.update(meta)  # class names, when the file has them
    return model
