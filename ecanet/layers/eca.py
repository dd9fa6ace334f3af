"""Efficient Channel Attention (ECA), Wang et al., CVPR 2020, Section 3.

Global average pooling gives one descriptor per channel; a 1-D convolution of size k slides over that
channel vector (local cross-channel interaction without dimensionality reduction, no bias); a gate turns the
result into per-channel weights that rescale the input (Eq. 7: omega = sigma(C1D_k(y))).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GATES = {"sigmoid": torch.sigmoid, "hard_sigmoid": F.hardsigmoid}
PADDINGS = ("zeros", "circular")


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """Adaptive kernel size psi(C) = |log2(C)/gamma + beta/gamma|_odd of the paper (Eq. 9).

    t = int(|(log2(C) + beta) / gamma|); k = t if t is odd else t + 1. Unlike timm, k is not clamped to
    at least 3: small channel counts (C < 8 with the defaults) give k = 1, as the formula says.
    """
    if channels < 1:
        raise ValueError(f"eca_kernel_size: channels must be >= 1, got {channels}")
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


def spatial_mean(x: Tensor) -> Tensor:
    """Global average pooling over every axis after the channel axis: (N, C, *S) -> (N, C)."""
    return x.mean(dim=tuple(range(2, x.ndim)))


def broadcast_channels(scale: Tensor, x: Tensor) -> Tensor:
    """View an (N, C) or (C,) per-channel scale so that it broadcasts against x of shape (N, C, *S)."""
    lead = (1, -1) if scale.ndim == 1 else scale.shape
    return scale.reshape(*lead, *([1] * (x.ndim - 2)))


class ECA(nn.Module):
    """ECA module: y = x * gate(conv1d_k(GAP(x))) along the channel axis.

    Args:
        channels: input channels C; needed for the adaptive kernel size, for ``shared=False`` and to check
            inputs. May be None when ``kernel_size`` is given and ``shared=True``.
        kernel_size: odd k of the 1-D convolution; None selects k = eca_kernel_size(C, gamma, beta).
        gamma, beta: parameters of the adaptive kernel-size mapping (paper: 2 and 1).
        padding: "zeros" (the paper's ECA, padding (k-1)/2) or "circular" (the channel ring wraps).
        shared: True shares one k-weight kernel across channels (the paper's ECA); False gives every
            channel its own kernel (ECA-NS, the paper's Table 1 ablation), C*k weights.
        gate: "sigmoid" (paper) or "hard_sigmoid".

    Works on (N, C, L), (N, C, H, W) and (N, C, D, H, W) inputs.
    """

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int | None = None,
        gamma: float = 2,
        beta: float = 1,
        padding: str = "zeros",
        shared: bool = True,
        gate: str = "sigmoid",
    ) -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"ECA: padding must be one of {PADDINGS}, got {padding!r}")
        if gate not in GATES:
            raise ValueError(f"ECA: gate must be one of {tuple(GATES)}, got {gate!r}")
        if kernel_size is None:
            if channels is None:
                raise ValueError("ECA: give channels (for the adaptive kernel size) or kernel_size")
            kernel_size = eca_kernel_size(channels, gamma, beta)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ECA: kernel_size must be a positive odd number, got {kernel_size}")
        if not shared and channels is None:
            raise ValueError("ECA: shared=False (ECA-NS) needs channels, one kernel per channel")
        self.channels, self.kernel_size, self.padding, self.shared, self.gate_name = (
            channels, kernel_size, padding, shared, gate
        )  # fmt: skip
        if shared:
            self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, padding_mode=padding, bias=False)
        else:
            # Depthwise: channel c convolves its own window of k neighbours with its own kernel.
            self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=False)

    def extra_repr(self) -> str:
        kind = "" if self.shared else ", shared=False"
        return f"channels={self.channels}, kernel_size={self.kernel_size}, padding={self.padding!r}{kind}"

    def check_input(self, x: Tensor) -> None:
        if x.ndim < 3:
            raise ValueError(f"ECA: expected an (N, C, ...) input with at least 3 dims, got shape {tuple(x.shape)}")
        if self.channels is not None and x.shape[1] != self.channels:
            raise ValueError(f"ECA: input has {x.shape[1]} channels, but this layer was built for {self.channels}")

    def attention(self, x: Tensor) -> Tensor:
        """The per-channel weights, shape (N, C), each in (0, 1)."""
        self.check_input(x)
        return self.gate(spatial_mean(x))

    def gate(self, pooled: Tensor) -> Tensor:
        """Channel weights from the pooled descriptor, (N, C) -> (N, C): the 1-D convolution over the
        channel vector (the module's own ``conv``), then the gate."""
        if self.shared:  # the channels as the length of one signal
            y = self.conv(pooled.unsqueeze(1)).squeeze(1)
        else:  # ECA-NS: each channel's window of k neighbours, padded as the shared kernel would be
            p = (self.kernel_size - 1) // 2
            padded = F.pad(pooled.unsqueeze(1), (p, p), mode="constant" if self.padding == "zeros" else "circular")
            y = self.conv(padded.squeeze(1).unfold(1, self.kernel_size, 1)).squeeze(-1)
        return GATES[self.gate_name](y)

    def forward(self, x: Tensor) -> Tensor:
        return x * broadcast_channels(self.attention(x).to(x.dtype), x)

    def extra_ops(self, shape: tuple[int, ...]) -> int:
        """Elementwise work a FLOP counter skips, per sample: the pooling sums and the gating products."""
        c, spatial = shape[1], math.prod(shape[2:])
        return 2 * c * spatial
