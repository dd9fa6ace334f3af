"""Output stride 16 or 8 for dense prediction: the strides of the last stages become dilations, as
torchvision's ``replace_stride_with_dilation`` (ResNets) and timm's ``output_stride`` (MobileNetV2) do.

The block that gives up its stride keeps the previous dilation in its first 3x3 convolution; every later
3x3 convolution gets the new one (doubled at each stride given up). Weights are unchanged, so this runs on
a built (or loaded) model.
"""

from __future__ import annotations

from torch import nn

from ..layers import is_attention

OUTPUT_STRIDES = (8, 16, 32)


def _set(conv: nn.Conv2d, dilation: int, stride: int | None = None) -> None:
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation * (conv.kernel_size[0] // 2),) * 2
    if stride is not None:
        conv.stride = (stride, stride)


def _spatial_convs(block: nn.Module) -> list[nn.Conv2d]:
    """The block's 3x3 (or larger) convolutions, in order; the attention's own (CBAM's 7x7) stay as they are."""
    inside = {id(m) for a in block.modules() if is_attention(a) for m in a.modules()}
    return [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1 and id(m) not in inside]


def set_output_stride(model: nn.Module, output_stride: int) -> nn.Module:
    """Dilate the last stages of a zoo ResNet or MobileNetV2 so that its maps are at most 1/output_stride
    of the input side; returns the model. Networks whose stride never exceeds it (CIFAR ResNets) are
    unchanged."""
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    stride, dilation = model.stem_stride, 1
    for block in model.blocks():
        convs = _spatial_convs(block)
        previous = dilation
        if block.stride == 2 and stride * 2 > output_stride:
            dilation *= 2
            _set(convs[0], previous, stride=1)
            for conv in convs[1:]:
                _set(conv, dilation)
            shortcut = getattr(block, "downsample", None)
            if shortcut is not None:
                shortcut[0].stride = (1, 1)
            block.stride = 1
        else:
            stride *= block.stride
            for conv in convs:
                _set(conv, dilation)
    model.output_stride = output_stride
    return model
