"""Squeeze-and-Excitation (SE), Hu et al., CVPR 2018: the channel-attention baseline of the paper's tables.

GAP -> FC(C, C/r) -> ReLU -> FC(C/r, C) -> sigmoid -> rescale. The two fully connected layers reduce
dimensionality, which ECA-Net (Section 3.2) shows to be harmful and avoids.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from .eca import broadcast_channels, spatial_mean


class SE(nn.Module):
    """SE block with reduction ratio r (default 16, as in the SENet paper and ECA-Net's comparison)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channels = channels
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)

    def check_input(self, x: Tensor) -> None:
        if x.ndim < 3 or x.shape[1] != self.channels:
            raise ValueError(
                f"SE: input has shape {tuple(x.shape)}, but this layer was built for {self.channels} channels"
            )

    def attention(self, x: Tensor) -> Tensor:
        """The per-channel weights, shape (N, C)."""
        self.check_input(x)
        return self.gate(spatial_mean(x))

    def gate(self, pooled: Tensor) -> Tensor:
        """Channel weights from the pooled descriptor: (N, C) -> (N, C), through the reducing MLP."""
        return self.fc2(self.relu(self.fc1(pooled))).sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * broadcast_channels(self.attention(x), x)

    def extra_ops(self, shape: tuple[int, ...]) -> int:
        """Pooling sums and gating products per sample (the FC layers are counted by the FLOP counter)."""
        return 2 * shape[1] * math.prod(shape[2:])
