"""Convolutional Block Attention Module (CBAM), Woo et al., ECCV 2018: a baseline of the paper's tables.

Channel attention (a shared MLP with reduction r over average- and max-pooled descriptors), then spatial
attention (a 7x7 convolution over the channel-wise mean and max maps, followed by BatchNorm).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .eca import broadcast_channels


class CBAM(nn.Module):
    """CBAM for 2-D feature maps, reduction 16 and a 7x7 spatial kernel by default."""

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        self.channels = channels
        hidden = max(channels // reduction, 1)
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )
        self.spatial_conv = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1)

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"CBAM: expected an (N, {self.channels}, H, W) input, got shape {tuple(x.shape)}")

    def channel_gate(self, avg: Tensor, mx: Tensor) -> Tensor:
        """Channel weights (N, C) from the average- and max-pooled descriptors, through the shared MLP."""
        return (self.channel_mlp(avg) + self.channel_mlp(mx)).sigmoid()

    def attention(self, x: Tensor) -> Tensor:
        """The per-channel weights of the channel-attention half, shape (N, C)."""
        self.check_input(x)
        return self.channel_gate(x.mean((2, 3)), x.amax((2, 3)))

    def spatial_gate(self, x: Tensor) -> Tensor:
        """Per-position weights (N, 1, H, W) from the channel-wise mean and max maps."""
        maps = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)  # (N, 2, H, W)
        return self.spatial_bn(self.spatial_conv(maps)).sigmoid()

    def channel_half(self, x: Tensor) -> Tensor:
        """x weighted by the channel-attention half (what the spatial half takes)."""
        return x * broadcast_channels(self.attention(x), x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.channel_half(x)
        return x * self.spatial_gate(x)

    def extra_ops(self, shape: tuple[int, ...]) -> int:
        """Per sample: two poolings and one gating on each of the channel and spatial halves."""
        return 6 * shape[1] * math.prod(shape[2:])
