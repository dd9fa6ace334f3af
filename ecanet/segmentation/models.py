"""Segmenters over the zoo's backbones: DeepLabV3 and FCN on torchvision's heads (as torchvision builds
``deeplabv3_resnet50``: a dilated backbone, the head on the last stage, an auxiliary FCN head on the one
before), and U-Net, FPN and DeepLabV3+ from segmentation-models-pytorch (the "segmentation" extra), whose
encoder is the zoo model through timm's registry (``tu-ecanet_<backbone>``).

Every segmenter returns ``{"out": logits}`` at the input's size (plus ``"aux"`` for DeepLabV3/FCN with the
auxiliary head), whatever library built it.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn
from torchvision.models.segmentation import FCN, DeepLabV3
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from ..errors import CheckpointError, require
from ..models import ARCHS, create_model, parse_model_name
from ..models.features import FeatureNet
from ..models.registry import Arch
from ..weights import FRESH_PARTS, load_state, read_weights
from .canet import CANet

CANET_OPTIONS = ("channel_attention", "width", "scales", "spatial_attention", "scale_attention")

TORCHVISION_KINDS = ("deeplabv3", "fcn")
SMP_KINDS = ("unet", "fpn", "deeplabv3plus")
KINDS = TORCHVISION_KINDS + SMP_KINDS + ("canet",)
DEFAULT_OUTPUT_STRIDE = {"deeplabv3": 8, "fcn": 8, "deeplabv3plus": 16, "unet": 32, "fpn": 32, "canet": 16}


class _Named(FeatureNet):
    """The last two levels as torchvision's segmentation models read them: ``{"aux": ..., "out": ...}``."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return dict(zip(("aux", "out"), super().forward(x)))


class _SmpSegmenter(nn.Module):
    """A segmentation-models-pytorch model whose output is returned as ``{"out": logits}``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.net(x)}


def _backbone(name: str, weights: str | None, output_stride: int, in_chans: int) -> nn.Module:
    net = create_model(name, output_stride=output_stride, in_chans=in_chans)
    if weights:
        load_state(net, read_weights(weights)[0], f"--backbone-weights {weights}", fresh=FRESH_PARTS)
    return net


def create_segmenter(
    kind: str = "deeplabv3",
    backbone: str = "eca_resnet50",
    num_classes: int = 21,
    backbone_weights: str | None = None,
    output_stride: int | None = None,
    aux_loss: bool = True,
    in_chans: int = 3,
    channel_attention: str | None = "canet",
    width: int = 16,
    scales: int = 4,
    spatial_attention: bool = True,
    scale_attention: bool = True,
) -> nn.Module:
    """A ``kind`` segmenter (deeplabv3, fcn, unet, fpn, deeplabv3plus) over zoo model ``backbone``, or CA-Net
    (``canet``, its own encoder: ``backbone`` and its weights do not apply).

    ``backbone_weights``: ImageNet weights in any format ``load_checkpoint`` reads (ours, the authors',
    torchvision's; the classifier is dropped, RGB weights adapt to ``in_chans``). ``output_stride``: None
    gives the kind's usual one (8 for DeepLabV3/FCN as torchvision, 16 for DeepLabV3+, 32 for U-Net/FPN,
    which take no other). ``aux_loss``: DeepLabV3/FCN's auxiliary head on the stage before the last.
    ``channel_attention`` ("canet", "eca", "se", "cbam" or None), ``width`` (base width) and ``scales`` (decoder
    scales weighed) shape CA-Net (see ``canet.CANet``).
    """
    if kind not in KINDS:
        raise ValueError(f"--model: unknown segmenter {kind!r}; choose one of {KINDS}")
    if kind == "canet":
        model = CANet(num_classes, in_chans, channel_attention, width, scales, spatial_attention, scale_attention)
        model.config = {"model": kind, "kind": kind, "backbone": None, "num_classes": num_classes, "in_chans": in_chans}
        model.config |= {"channel_attention": channel_attention, "width": width, "scales": scales}
        model.config |= {"spatial_attention": spatial_attention, "scale_attention": scale_attention}
        model.config |= {"output_stride": 16, "aux_loss": False}
        return model
    arch = ARCHS[parse_model_name(backbone)[1]]
    output_stride = output_stride or DEFAULT_OUTPUT_STRIDE[kind]
    config = {"model": kind, "kind": kind, "backbone": backbone, "num_classes": num_classes}
    config |= {"output_stride": output_stride, "aux_loss": aux_loss and kind in TORCHVISION_KINDS, "in_chans": in_chans}
    if kind in TORCHVISION_KINDS:
        net = _backbone(backbone, backbone_weights, output_stride, in_chans)
        features = _Named(net, (-2, -1))
        aux_channels, channels = features.feature_info.channels()
        head = DeepLabHead(channels, num_classes) if kind == "deeplabv3" else FCNHead(channels, num_classes)
        aux = FCNHead(aux_channels, num_classes) if aux_loss else None
        model: nn.Module = (DeepLabV3 if kind == "deeplabv3" else FCN)(features, head, aux)
    else:
        model = _smp_segmenter(kind, backbone, arch, num_classes, backbone_weights, output_stride, in_chans)
    model.config = config
    return model


def _smp_segmenter(
    kind: str, backbone: str, arch: Arch, num_classes: int, weights: str | None, output_stride: int, in_chans: int
) -> nn.Module:
    smp = require("segmentation_models_pytorch", "segmentation")
    from ..timm_models import register_timm

    if arch.dataset != "imagenet":
        raise ValueError(f"--backbone: {kind} takes ImageNet backbones (feature reductions 2..32), not {backbone}")
    if kind != "deeplabv3plus" and output_stride != 32:
        raise ValueError(f"--output-stride: {kind} decodes every level and takes output stride 32 only")
    register_timm()
    builder = {"unet": smp.Unet, "fpn": smp.FPN, "deeplabv3plus": smp.DeepLabV3Plus}[kind]
    extra = {"encoder_output_stride": output_stride} if kind == "deeplabv3plus" else {}
    net = builder(f"tu-ecanet_{backbone}", encoder_weights=None, in_channels=in_chans, classes=num_classes, **extra)
    if weights:
        encoder = net.encoder.model
        loaded = FeatureNet(_backbone(backbone, weights, output_stride, in_chans), encoder.out_indices)
        encoder.load_state_dict(loaded.state_dict())
    return _SmpSegmenter(net)


def load_segmenter(path: str | Path) -> nn.Module:
    """A segmenter saved by ``ecanet segment train`` (safetensors with kind, backbone, classes in metadata)."""
    state, meta = read_weights(path)
    if "kind" not in meta or meta["kind"] not in KINDS:
        raise CheckpointError(f"{path}: not segmenter weights (no segmenter kind in the metadata)")
    model = create_segmenter(
        meta["kind"],
        meta["backbone"],
        meta["num_classes"],
        None,
        meta["output_stride"],
        meta["aux_loss"],
        meta["in_chans"],
        **{k: meta[k] for k in CANET_OPTIONS if k in meta},
    )
    load_state(model, state, str(path))
    model.config.update(meta)
    return model
