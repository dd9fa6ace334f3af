"""Where ECA goes in each CNN family ``attach_eca`` knows: the paper's rule (Section 3, Fig. 2 and its
ResNet/MobileNetV2 placement) carried over — on a residual branch after its last norm, before the addition;
after the projection norm of an inverted residual; after the last norm of a plain conv stage.

A family is recognised by the module and class name of its block (timm is optional: its classes are never
imported here). Each rule returns a ``Spot``: which tensor ECA reads and how it is put there without renaming
any existing tensor. Whether the block already has attention is decided by ``attach_eca``, alike for all.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from ..models.resnet import AttentionBlock


class Spot(NamedTuple):
    """``how``: "slot" (``holder.<attr> = eca``, a block's own attention slot), "hook" (``holder.eca = eca``,
    applied to ``reads``'s output; ``channels_last`` when that output is NHWC), "append" (``reads`` is a
    Sequential that ECA is appended to) or "ecanet" (this package's blocks)."""

    family: str
    how: str
    reads: nn.Module
    channels: int
    holder: nn.Module
    attr: str = "eca"
    channels_last: bool = False
    busy: bool = False  # the block's own attention slot (timm's ``se``, ``attn``) holds a module


def _cls(module: nn.Module) -> tuple[str, str]:
    return type(module).__module__, type(module).__name__


def _filled(*slots: nn.Module | None) -> bool:
    return any(m is not None and not isinstance(m, nn.Identity) for m in slots)


def _last_bn(block: nn.Module) -> nn.Module:
    return block.bn3 if hasattr(block, "bn3") else block.bn2


def _norm_channels(seq: nn.Sequential) -> int:
    """Channels of an inverted residual's projection: it ends in a BN or a (conv, BN) Sequential."""
    last = seq[-1] if isinstance(seq[-1], nn.BatchNorm2d) else seq[-1][1]
    return last.num_features


def _plain_stages(features: nn.Sequential) -> list[tuple[str, nn.Module]]:
    """VGG-like stages (convs up to a max-pool): each stage's last BatchNorm, else its last conv."""
    spots, last = [], None
    for name, m in features.named_children():
        if isinstance(m, (nn.BatchNorm2d, nn.Conv2d)):  # a stage's BN follows its conv
            last = (name, m)
        if isinstance(m, nn.MaxPool2d) and last is not None:
            spots.append(last)
            last = None
    return spots + ([last] if last is not None else [])


def spot(block: nn.Module) -> Spot | list[tuple[str, Spot]] | None:
    """Where ECA goes in ``block`` (a list of (child name, Spot) for a VGG's plain stages), or None."""
    mod, name = _cls(block)
    if isinstance(block, AttentionBlock):
        bn = _last_bn(block)
        return Spot("ResNet (ecanet)", "ecanet", bn, bn.num_features, block)
    if mod == "torchvision.models.resnet" and name in ("BasicBlock", "Bottleneck"):
        bn = _last_bn(block)
        return Spot("ResNet", "hook", bn, bn.num_features, block)
    if mod == "timm.models.resnet" and name in ("BasicBlock", "Bottleneck"):
        bn = _last_bn(block)
        return Spot("ResNet", "slot", bn, bn.num_features, block, attr="se", busy=_filled(block.se))
    if mod == "torchvision.models.mobilenetv2" and name == "InvertedResidual":
        return Spot("MobileNetV2", "append", block.conv, _norm_channels(block.conv), block)
    if mod == "torchvision.models.mobilenetv3" and name == "InvertedResidual":
        return Spot("MobileNetV3", "append", block.block, _norm_channels(block.block), block)
    if mod == "timm.models._efficientnet_blocks" and name == "InvertedResidual":  # after the projection norm
        bn = block.bn3
        return Spot("MobileNetV2/V3", "hook", bn, bn.num_features, block, busy=_filled(block.se))
    if mod == "torchvision.models.convnext" and name == "CNBlock":  # before layer scale and the residual
        return Spot("ConvNeXt", "append", block.block, block.block[0].out_channels, block)
    if mod == "timm.models.convnext" and name == "ConvNeXtBlock":  # the MLP's output, before layer scale
        nhwc = not block.use_conv_mlp
        return Spot("ConvNeXt", "hook", block.mlp, block.conv_dw.out_channels, block, channels_last=nhwc)
    if mod == "torchvision.models.regnet" and name == "ResBottleneckBlock":
        return Spot("RegNet", "append", block.f, block.f.c[1].num_features, block)
    if mod == "timm.models.regnet" and name == "Bottleneck":
        bn = block.conv3.bn
        return Spot("RegNet", "hook", block.conv3, bn.num_features, block, busy=_filled(block.se))
    if (mod, name) in (("torchvision.models.densenet", "_DenseLayer"), ("timm.models.densenet", "DenseLayer")):
        return Spot("DenseNet", "hook", block, block.conv2.out_channels, block)
    if mod == "torchvision.models.shufflenetv2" and name == "InvertedResidual":
        bn = [m for m in block.branch2 if isinstance(m, nn.BatchNorm2d)][-1]
        return Spot("ShuffleNetV2", "hook", bn, bn.num_features, block)
    if mod == "timm.models.cspnet" and name == "BottleneckBlock":  # its attn3 slot: after conv3's norm, before +
        busy = _filled(block.attn2, block.attn3)
        return Spot("CSPNet", "slot", block.conv3, block.conv3.bn.num_features, block, attr="attn3", busy=busy)
    if mod == "timm.models.cspnet" and name in ("DarkBlock", "EdgeBlock"):  # after conv2 (conv-norm-act), before +
        busy = _filled(block.attn)
        return Spot("CSPDarknet", "hook", block.conv2, block.conv2.conv.out_channels, block, busy=busy)
    if (mod, name) in (("torchvision.models.vgg", "VGG"), ("timm.models.vgg", "VGG")):
        return [
            (f"features.{child}", Spot("VGG", "hook", m, getattr(m, "num_features", 0) or m.out_channels, m))
            for child, m in _plain_stages(block.features)
        ]
    return None
