"""MobileNetV2 with channel attention after the projection BatchNorm of every inverted residual
(ECA-Net, Section 4.1.1), built on torchvision's MobileNetV2 so names and weights match it.

The attention module is appended to each block's ``conv`` Sequential, as in the ECA authors' code, so
their released weights (``features.N.conv.4.conv.weight``) and torchvision's load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torchvision.models import mobilenetv2 as tv

from ..layers import create_attention, is_attention
from ..layers.fused import DEFAULT_DEVICES, fast_path_applies, fused_tail, set_fused
from .norm import freeze_parameters

# t (expansion), c (output channels), n (repeats), s (stride): Table 2 of the MobileNetV2 paper.
SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


class InvertedResidual(tv.InvertedResidual):
    """torchvision's inverted residual plus attention after the projection BN; with ``fused`` the
    projection BN, the attention (or none) and the shortcut addition run as one step on a CPU (``fused_tail``;
    in inference written into the projection's output)."""

    fused: bool = True
    fused_devices: frozenset[str] = DEFAULT_DEVICES

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        norm_layer: Callable[..., nn.Module] | None = None,
        attn: str | None = None,
        kernel_size: int | None = None,
    ) -> None:
        super().__init__(inp, oup, stride, expand_ratio, norm_layer)
        if attn is not None:
            self.conv.append(create_attention(attn, oup, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        attn = self.conv[-1] if is_attention(self.conv[-1]) else None
        *body, norm = self.conv[:-1] if attn is not None else self.conv
        if not fast_path_applies(self.fused, attn, norm, x, self.fused_devices):
            return super().forward(x)
        out = x
        for layer in body:
            out = layer(out)
        return fused_tail(attn, norm, out, x if self.use_res_connect else None, relu=False, inplace=True)


class MobileNetV2(tv.MobileNetV2):
    """torchvision's MobileNetV2 with ``attn`` in every block and the authors' classifier dropout (0.25).

    ``kernel_sizes`` gives the ECA k for each of the 7 stages (rows of the inverted-residual setting);
    None entries choose the adaptive size from the block's output channels.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        attn: str | None = None,
        kernel_sizes: Sequence[int | None] | None = None,
        width_mult: float = 1.0,
        dropout: float = 0.25,
        fused: bool = True,
    ) -> None:
        kernel_sizes = list(kernel_sizes) if kernel_sizes is not None else [None] * len(SETTING)
        if len(kernel_sizes) != len(SETTING):
            raise ValueError(f"MobileNetV2: {len(SETTING)} stages but {len(kernel_sizes)} kernel sizes")
        # Every stage has its own width, so a block's output channels name its stage (and its k).
        k_by_width = {
            tv._make_divisible(c * width_mult, 8): k for (_, c, _, _), k in zip(SETTING, kernel_sizes, strict=True)
        }

        def block(inp: int, oup: int, stride: int, expand_ratio: int, norm_layer=None) -> InvertedResidual:
            return InvertedResidual(inp, oup, stride, expand_ratio, norm_layer, attn, k_by_width[oup])

        super().__init__(num_classes, width_mult, SETTING, block=block, dropout=dropout)
        starts = [1]
        for _, _, n, _ in SETTING:
            starts.append(starts[-1] + n)
        self._stage_starts = starts[:-1]
        # The last block before every stride-2 row, and the last block: the levels at reductions 2..32.
        self._level_ends = [starts[r] - 1 for r, (_, _, _, s) in enumerate(SETTING) if s == 2] + [starts[-1] - 1]
        # Ends of the stride-4/8/16/32 stages (after the blocks of 24, 32, 96 and 320 channels, then the
        # final 1x1 conv), the maps an FPN would use.
        self._stage_ends = [starts[2] - 1, starts[3] - 1, starts[5] - 1, len(self.features) - 1]
        self.feature_channels = [self.features[i].out_channels for i in self._stage_ends[:-1]]
        self.feature_channels.append(self.last_channel)
        self.num_features = self.last_channel
        self.stem_stride = 2
        self.output_stride = 32  # ecanet.models.dilation changes it
        set_fused(self, fused)

    def sync_widths(self) -> None:
        """Read the block, stage and feature widths off the layers again (after channel pruning)."""
        for block in self.features[1:-1]:
            block.out_channels = [m for m in block.conv if isinstance(m, nn.BatchNorm2d)][-1].num_features
        self.last_channel = self.num_features = self.features[-1][1].num_features
        self.feature_channels = [self.features[i].out_channels for i in self._stage_ends[:-1]] + [self.last_channel]

    def stages(self) -> list[nn.Module]:
        """The inverted residuals of every row of the setting (Table 2 of the MobileNetV2 paper)."""
        ends = [*self._stage_starts[1:], self._stage_starts[-1] + SETTING[-1][2]]
        return [self.features[a:b] for a, b in zip(self._stage_starts, ends)]

    def blocks(self) -> list[nn.Module]:
        return list(self.features[1:-1])

    first_conv = "features.0.0"

    @property
    def feature_info(self) -> list[dict]:
        """The output of the last block at every reduction 2..32 (channels, reduction, module), as timm's
        MobileNetV2 reports them (the final 1x1 convolution is the classifier's, not a level)."""
        return [
            dict(
                num_chs=self.features[i].out_channels,
                reduction=min(2 ** (n + 1), self.output_stride),
                module=f"features.{i}",
            )
            for n, i in enumerate(self._level_ends)
        ]

    def freeze_stages(self, n: int, stem: bool = True) -> None:
        """Fix the parameters of the stem (``features.0``) and of the first ``n`` stages."""
        freeze_parameters([self.features[0]], self.stages(), n, stem)

    def stage_prefixes(self) -> list[str]:
        """Module name of the first block of every stage."""
        return [f"features.{i}" for i in self._stage_starts]

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Feature maps at strides 4, 8, 16 and 32."""
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._stage_ends:
                outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor) -> Tensor:
        return self.classifier(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
