"""Efficient Channel Attention (ECA), Wang et al., CVPR 2020, Section 3.

Global average pooling gives one descriptor per channel; a 1-D convolution of size k slides over that
channel vector (local cross-channel interaction without dimensionality reduction, no bias); a gate turns the
result into per-channel weights that rescale the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GATES = {"sigmoid": torch.sigmoid, "hard_sigmoid": F.hardsigmoid}
# Each gate's derivative, given (gradient, input, output): ATen's own backward kernels, as autograd uses them.
GATE_BACKWARDS = {
    "sigmoid": lambda grad, x, y: torch.ops.aten.sigmoid_backward(grad, y),
    "hard_sigmoid": lambda grad, x, y: torch.ops.aten.hardsigmoid_backward(grad, x),
}
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
    """View an (N, C) per-channel scale so that it broadcasts against x of shape (N, C, *S)."""
    return scale.view(*scale.shape, *([1] * (x.ndim - 2)))


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
        self.channels = channels
        self.kernel_size = kernel_size
        self.padding = padding
        self.shared = shared
        self.gate_name = gate
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
        """Channel weights from the pooled descriptor: (N, C) -> (N, C).

        The 1-D convolution over the channel vector is written as a product of each channel's window of k
        neighbours with the kernel (``self.conv.weight``, so weights keep their names): the same arithmetic
        as ``nn.Conv1d``, several times faster in backward on CPU, and counted by the FLOP counter alike.
        Under torch.compile, where no FLOP counter runs, the same sum is written as k shifted products.
        """
        k = self.kernel_size
        if self.shared and torch.compiler.is_exporting():
            # One Conv node in an exported graph: ONNX Runtime pays per node, and the shifted products below
            # would be 3k of them (measured in docs/benchmarks.md, batch-1 latency).
            return GATES[self.gate_name](self.conv(pooled.unsqueeze(1)).squeeze(1))
        padded = self._padded(pooled)
        if torch.compiler.is_compiling():
            # k shifted products, which Inductor fuses with the padding and the gate into one small kernel;
            # the (N*C, k) @ (k, 1) product would be an external GEMM call per block.
            return GATES[self.gate_name](self._shifted_products(padded))
        windows = padded.unfold(1, k, 1)  # (N, C, k)
        if self.shared:
            y = (windows @ self.conv.weight.view(k, 1)).squeeze(-1)
        else:  # ECA-NS: channel c's window times channel c's own kernel
            y = (windows.transpose(0, 1) @ self.conv.weight.view(-1, k, 1)).squeeze(-1).t()
        return GATES[self.gate_name](y)

    def gate_vjp(self, pooled: Tensor) -> tuple[Tensor, Callable[[Tensor], tuple[Tensor, list[Tensor]]]]:
        """``gate(pooled)`` and its vector-Jacobian product, written out: a function from dL/d(weights) to
        (dL/d(pooled), [dL/d(self.conv.weight)]). The fused training step calls it instead of recording the
        gate's graph for autograd, whose engine costs more than the gate itself on small maps. The
        convolution is k shifted products each way: on (N, C) tensors cheaper calls than the windowed
        matrix product, which copies the windows (the pooled vector's gradient: 14 against 77 us at
        (64, 64) here)."""
        k, c = self.kernel_size, pooled.shape[1]
        padded = self._padded(pooled)
        conv = self._shifted_products(padded)
        weights = GATES[self.gate_name](conv)

        def vjp(d_weights: Tensor) -> tuple[Tensor, list[Tensor]]:
            d_conv = GATE_BACKWARDS[self.gate_name](d_weights, conv, weights)
            kernel = self.conv.weight.view(-1, k)  # (1, k) shared, (C, k) for ECA-NS
            # (N, C, k): d_kernel[.., j] = sum of d_conv * window j (under autocast the gate computed in
            # the kernel's dtype, so d_conv may be wider than the pooled vector)
            windows = padded.unfold(1, k, 1).to(d_conv.dtype)
            if self.shared:
                d_kernel = (d_conv.unsqueeze(1) @ windows).sum((0, 1))
            else:
                d_kernel = (d_conv.t().unsqueeze(1) @ windows.transpose(0, 1)).squeeze(1)
            # The convolution's adjoint: d_pooled[i] = sum_j kernel[i + p - j, j] * d_conv[i + p - j], that
            # is, tap j's products (N, C), padded as the input was, shifted by k - 1 - j and summed.
            taps = self._padded(d_conv.unsqueeze(1) * kernel.t())  # (N, k, C + k - 1)
            shifted = [taps[:, j, k - 1 - j : k - 1 - j + c] for j in range(k)]
            d_pooled = sum(shifted[1:], shifted[0])
            return d_pooled, [d_kernel.view_as(self.conv.weight).to(self.conv.weight.dtype)]

        return weights, vjp

    def gate_parameters(self) -> list[Tensor]:
        """The parameters of ``gate``, in the order ``gate_vjp`` gives their gradients."""
        return [self.conv.weight]

    def _padded(self, v: Tensor) -> Tensor:
        """v, (N, C) or (N, R, C), padded on its channel axis by (k - 1) / 2 at each end: zeros, or the
        ring's other end."""
        p = (self.kernel_size - 1) // 2
        if self.padding == "zeros":
            return torch.constant_pad_nd(v, (p, p))
        return torch.cat((v[..., v.shape[-1] - p :], v, v[..., :p]), -1)

    def _shifted_products(self, padded: Tensor) -> Tensor:
        """The 1-D convolution of the padded vector (N, C + k - 1) as k shifted products: (N, C)."""
        k = self.kernel_size
        c, kernel = padded.shape[1] - k + 1, self.conv.weight.view(-1, k)  # (1, k) shared, (C, k) ECA-NS
        out = padded[:, :c] * kernel[:, 0]
        for j in range(1, k):
            out = torch.addcmul(out, padded[:, j : j + c], kernel[:, j])
        return out

    def forward(self, x: Tensor) -> Tensor:
        return x * broadcast_channels(self.attention(x), x)

    def extra_ops(self, shape: tuple[int, ...]) -> int:
        """Elementwise work a FLOP counter skips, per sample: the pooling sums and the gating products."""
        c, spatial = shape[1], math.prod(shape[2:])
        return 2 * c * spatial
