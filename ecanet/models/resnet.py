"""ResNets with channel attention on the residual branch (ECA-Net, Section 3.3 and Figure 2).

Attention sits after the last BatchNorm of the residual branch, before the addition. Module and
parameter names equal torchvision's (``conv1, bn1, layer1.0.conv1, ..., fc``) plus the attention
submodule (``layer1.0.eca.conv.weight``), so torchvision's and the ECA authors' weights load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers import attention_attribute, create_attention
from ..layers.fused import DEFAULT_DEVICES, fast_path_applies, fused_tail, set_fused
from .norm import freeze_parameters


def conv3x3(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)


class AttentionBlock(nn.Module):
    """What the residual blocks share: their attention module, by name (``eca``, ``se``, ``cbam``), and the
    switch of the fused tail.

    ``forward`` reads like Figure 2. On a CPU, when ``fused`` (the default), the block's tail (last
    BatchNorm, attention or none, addition, ReLU) runs as one step with the same value (``fused_tail``; in
    inference written into the last convolution's output), unless something watches the norm or the
    attention (``fast_path_applies``); on any other device, and with ``fused=False``, the plain formulation.
    """

    attn_name: str | None
    fused: bool = True
    fused_devices: frozenset[str] = DEFAULT_DEVICES

    def _set_attention(self, attn: str | None, channels: int, kernel_size: int | None) -> None:
        self.attn_name = attention_attribute(attn)
        if attn is not None:
            self.add_module(self.attn_name, create_attention(attn, channels, kernel_size))

    def attention(self, x: Tensor) -> Tensor:
        """The block's channel attention (identity without one)."""
        return x if self.attn_name is None else self.attention_module(x)

    @property
    def attention_module(self) -> nn.Module | None:
        return None if self.attn_name is None else getattr(self, self.attn_name)

    def _fuses(self, norm: nn.Module, x: Tensor) -> bool:
        return fast_path_applies(self.fused, self.attention_module, norm, x, self.fused_devices)


class BasicBlock(AttentionBlock):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn: str | None = None,
        kernel_size: int | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._set_attention(attn, planes, kernel_size)
        self.downsample = downsample
        self.stride = stride

    @property
    def out_norm(self) -> nn.BatchNorm2d:
        """The last BatchNorm of the residual branch (its width is the block's output width)."""
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if self._fuses(self.bn2, out):
            return fused_tail(self.attention_module, self.bn2, out, identity, inplace=True)
        out = self.bn2(out)
        out = self.attention(out)
        out += identity
        return self.relu(out)


class Bottleneck(AttentionBlock):
    """Bottleneck with the stride on the 3x3 convolution (ResNet v1.5, as torchvision and the authors)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn: str | None = None,
        kernel_size: int | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self._set_attention(attn, planes * self.expansion, kernel_size)
        self.downsample = downsample
        self.stride = stride

    @property
    def out_norm(self) -> nn.BatchNorm2d:
        """The last BatchNorm of the residual branch (its width is the block's output width)."""
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.conv3(out)
        if self._fuses(self.bn3, out):
            return fused_tail(self.attention_module, self.bn3, out, identity, inplace=True)
        out = self.bn3(out)
        out = self.attention(out)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """ResNet of ``len(layers)`` stages; ``stem="imagenet"`` (7x7/2 conv + max-pool) or ``"cifar"``
    (3x3/1 conv, He et al. Section 4.2). ``kernel_sizes`` gives the ECA k per stage (None: adaptive)."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        attn: str | None = None,
        kernel_sizes: Sequence[int | None] | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: str = "imagenet",
        zero_init_residual: bool = False,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if len(widths) != len(layers):
            raise ValueError(f"ResNet: {len(layers)} stages but {len(widths)} widths")
        kernel_sizes = list(kernel_sizes) if kernel_sizes is not None else [None] * len(layers)
        if len(kernel_sizes) != len(layers):
            raise ValueError(f"ResNet: {len(layers)} stages but {len(kernel_sizes)} kernel sizes")
        self.inplanes = widths[0]
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"ResNet: stem must be 'imagenet' or 'cifar', got {stem!r}")
        # Registered in the order they run: feature extractors run the children in order.
        imagenet = stem == "imagenet"
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False) if imagenet else conv3x3(3, self.inplanes)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1) if imagenet else nn.Identity()
        self.stem_stride = 4 if stem == "imagenet" else 1
        self.output_stride = 32  # ecanet.models.dilation changes it
        self.num_stages = len(layers)
        for i, (n, width, k) in enumerate(zip(layers, widths, kernel_sizes, strict=True)):
            stage = self._make_layer(block, width, n, 1 if i == 0 else 2, attn, k)
            self.add_module(f"layer{i + 1}", stage)
        self.feature_channels = [w * block.expansion for w in widths]
        self.num_features = self.feature_channels[-1]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)
        set_fused(self, fused)

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        attn: str | None,
        kernel_size: int | None,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample, attn, kernel_size)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, attn=attn, kernel_size=kernel_size) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def sync_widths(self) -> None:
        """Read the stage and feature widths off the layers again (after channel pruning)."""
        self.feature_channels = [stage[-1].out_norm.num_features for stage in self.stages()]
        self.num_features = self.fc.in_features

    def stages(self) -> list[nn.Module]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def blocks(self) -> list[nn.Module]:
        return [block for stage in self.stages() for block in stage]

    first_conv = "conv1"

    @property
    def feature_info(self) -> list[dict]:
        """The stem's and every stage's output (channels, reduction, module), timm's convention."""
        info = [dict(num_chs=self.bn1.num_features, reduction=max(self.stem_stride // 2, 1), module="relu")]
        for i, stage in enumerate(self.stages()):
            reduction = min(self.stem_stride * 2**i, self.output_stride)
            info.append(dict(num_chs=stage[-1].out_norm.num_features, reduction=reduction, module=f"layer{i + 1}"))
        return info

    def freeze_stages(self, n: int, stem: bool = True) -> None:
        """Fix the parameters of the stem (``conv1``, ``bn1``) and of the first ``n`` stages."""
        freeze_parameters([self.conv1, self.bn1], self.stages(), n, stem)

    def stage_prefixes(self) -> list[str]:
        """Module name of the first block of every stage (where per-stage settings can be read)."""
        return [f"layer{i + 1}.0" for i in range(self.num_stages)]

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Feature maps after every stage (strides 4, 8, 16, 32 for the ImageNet stem), e.g. for an FPN."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in self.stages():
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map, before pooling."""
        return self.forward_stages(x)[-1]

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(x).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
