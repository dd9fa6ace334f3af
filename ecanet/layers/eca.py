"""Efficient Channel Attention (ECA), Wang et al., CVPR 2020, Section 3.

Global average pooling gives one descriptor per channel; a 1-D convolution of size k slides over that
channel vector (local cross-channel interaction without dimensionality reduction, no bias); a gate turns the
result into per-channel weights that rescale the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

GATES = {"sigmoid": torch.sigmoid, "hard_sigmoid": F.hardsigmoid}
INPLACE_GATES = {"sigmoid": torch.sigmoid_, "hard_sigmoid": partial(F.hardsigmoid, inplace=True)}
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


def _shifted(padded: Tensor, k: int) -> tuple[Tensor, ...]:
    """The k windows padded[:, j : j + C] of a padded (N, C + k - 1) vector, as views (two operator calls
    rather than k; none for k = 1, the released MobileNetV2's size below 96 channels)."""
    if k == 1:
        return (padded,)
    return padded.unfold(1, padded.shape[1] - k + 1, 1).unbind(1)


def _tap_views(weight: Tensor, k: int) -> tuple[Tensor, ...]:
    """The k taps of a kernel of k weights per channel, as views: one view for k = 1."""
    if k == 1:
        return (weight.view(-1),)
    return weight.view(-1, k).unbind(1)


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

        The 1-D convolution over the channel vector runs as k shifted products (``self.conv.weight``, so
        weights keep their names): on (N, C) tensors cheaper calls than ``nn.Conv1d`` or a product with the
        windows of k neighbours (62 against 326 us at (16, 2048), k = 5, here), and Inductor fuses them with
        the padding and the gate into one small kernel. Other forms of the same sum: the module's own
        convolution in an exported graph (one Conv node: ONNX Runtime pays per node, and the products would
        be 2k of them: docs/benchmarks.md, batch-1 latency); a convolution over the padded vector for one
        sample and k > 3 in eager mode (15 against 18 us at (1, 160), k = 5; at k = 3 both cost 14 us, and
        from two samples on the convolution costs several times the products); the windowed matrix
        product while a dispatch mode watches (a FLOP counter counts a product, not the elementwise ops).
        Without autograd the taps are kept between calls and the gate is taken in place on the products'
        fresh sum (benchmarks/gate_call.py: one call cheaper than SE's at every zoo shape but ResNet-18's
        k = 5 and 7 stages).
        """
        k = self.kernel_size
        if self.shared and torch.compiler.is_exporting():
            return GATES[self.gate_name](self.conv(pooled.unsqueeze(1)).squeeze(1))
        padded = self._padded(pooled)
        compiling, watched = torch.compiler.is_compiling(), is_in_torch_dispatch_mode()
        if self.shared and k > 3 and pooled.shape[0] == 1 and not (compiling or watched):
            return GATES[self.gate_name](F.conv1d(padded.unsqueeze(1), self.conv.weight).squeeze(1))
        if compiling or not watched:
            gate = GATES if torch.is_grad_enabled() else INPLACE_GATES  # the products' sum is a fresh tensor
            return gate[self.gate_name](self._shifted_products(padded, self._taps()))
        windows = padded.unfold(1, k, 1)  # (N, C, k)
        if self.shared:
            y = (windows @ self.conv.weight.view(k, 1)).squeeze(-1)
        else:  # ECA-NS: channel c's window times channel c's own kernel
            y = (windows.transpose(0, 1) @ self.conv.weight.view(-1, k, 1)).squeeze(-1).t()
        return GATES[self.gate_name](y)

    def gate_vjp(self, pooled: Tensor) -> tuple[Tensor, Callable[[Tensor], tuple[Tensor, list[Tensor]]]]:
        """``gate(pooled)`` and its vector-Jacobian product, written out: a function from dL/d(weights) to
        (dL/d(pooled), [dL/d(self.conv.weight)]). The fused training step calls it instead of recording the
        gate's graph for autograd, whose engine costs more than the gate itself on small maps. Both ways the
        convolution is k shifted products (``gate``)."""
        k, c, kernel = self.kernel_size, pooled.shape[1], self.conv.weight
        padded, taps = self._padded(pooled), self._taps()
        conv = self._shifted_products(padded, taps)
        weights = GATES[self.gate_name](conv)

        def vjp(d_weights: Tensor) -> tuple[Tensor, list[Tensor]]:
            d_conv = GATE_BACKWARDS[self.gate_name](d_weights, conv, weights)
            # Under autocast the gate computed in the kernel's dtype: d_conv may be wider than the input.
            windows = padded if padded.dtype == d_conv.dtype else padded.to(d_conv.dtype)
            # Tap j's gradient: d_conv times window j, summed over the samples (and channels, if shared): one
            # product with the (N, k, C) windows, where k products and their sums cost 2k + 2 calls (15 against
            # 26 us at (64, 16), k = 3; 148 against 173 at (16, 2048), k = 5).
            products = windows.unfold(1, c, 1) * d_conv.unsqueeze(1)
            d_kernel = products.sum((0, 2)) if self.shared else products.sum(0).t()  # (k,) or (C, k)
            # The adjoint: d_pooled[q] = sum_j kernel[q + p - j, j] * d_conv[q + p - j], the same shifted
            # products over the padded d_conv with the taps reversed (for ECA-NS each tap padded as the
            # channels were, so that channel i's weight meets d_conv[i]).
            if self.shared:
                adjoint = taps[::-1]
            else:
                padded_kernel = self._padded(kernel.view(c, k).t())  # (k, C + k - 1)
                adjoint = [padded_kernel[k - 1 - j, j : j + c] for j in range(k)]
            d_pooled = self._shifted_products(self._padded(d_conv), adjoint)
            d_kernel = d_kernel.reshape(kernel.shape)
            return d_pooled, [d_kernel if d_kernel.dtype == kernel.dtype else d_kernel.to(kernel.dtype)]

        return weights, vjp

    def gate_parameters(self) -> list[Tensor]:
        """The parameters of ``gate``, in the order ``gate_vjp`` gives their gradients."""
        return [self.conv.weight]

    def _taps(self) -> tuple[Tensor, ...]:
        """The kernel's k taps: (1,) each, or (C,) for ECA-NS (channel c's weight for its window's j-th).

        Without autograd (inference, and the fused step's forward) the views of the last call are kept while
        the kernel has the same storage: views see every in-place write (optimiser steps, ``load_state_dict``),
        and a kernel replaced (``.to()``, ``.data =``, a new Parameter) lives elsewhere, since the kept views
        hold the old storage. Making them costs more than the products they feed on small vectors (4.7 of ECA's
        26 us a gate call at (64, 16), k = 3, here: docs/benchmarks.md, ninth run).
        """
        weight = self.conv.weight
        # Only a module's own Parameter (a tensor passed in: torch.func.functional_call, functorch's batched
        # tensors, a parametrization's fresh result, may not outlive the call), and never into a traced
        # graph, which would hold kept views as constants instead of reading the Parameter.
        if torch.is_grad_enabled() or type(weight) is not nn.Parameter or torch.jit.is_tracing():
            return _tap_views(weight, self.kernel_size)
        kept = self.__dict__.get("_kept_taps")  # the first tap starts where the kernel does
        if kept is None or kept[0].data_ptr() != weight.data_ptr():
            kept = self.__dict__["_kept_taps"] = _tap_views(weight.detach(), self.kernel_size)
        return kept

    def _padded(self, v: Tensor) -> Tensor:
        """v, (..., C), padded on its last (channel) axis by (k - 1) / 2 at each end: zeros, or the ring's
        other end."""
        p = (self.kernel_size - 1) // 2
        if p == 0:  # k = 1: nothing to pad, and no operator call for it
            return v
        if self.padding == "zeros":
            return torch.constant_pad_nd(v, (p, p))
        return torch.cat((v[..., v.shape[-1] - p :], v, v[..., :p]), -1)

    @staticmethod
    def _shifted_products(padded: Tensor, taps: Sequence[Tensor]) -> Tensor:
        """sum_j padded[:, j : j + C] * taps[j], (N, C), from the padded vector (N, C + k - 1)."""
        shifted = _shifted(padded, len(taps))
        out = shifted[0] * taps[0]
        # Sums in place: no tensor to allocate (1-3 us a call at k >= 5 here), and autograd keeps none of them;
        # not under torch.func's transforms, which have no batching rule for addcmul_.
        inplace = not torch._C._are_functorch_transforms_active()
        for j in range(1, len(taps)):
            out = out.addcmul_(shifted[j], taps[j]) if inplace else torch.addcmul(out, shifted[j], taps[j])
        return out

    def forward(self, x: Tensor) -> Tensor:
        # The weights in x's dtype: under autocast the shifted products run in the kernel's (fp32).
        return x * broadcast_channels(self.attention(x).to(x.dtype), x)

    def extra_ops(self, shape: tuple[int, ...]) -> int:
        """Elementwise work a FLOP counter skips, per sample: the pooling sums and the gating products."""
        c, spatial = shape[1], math.prod(shape[2:])
        return 2 * c * spatial
