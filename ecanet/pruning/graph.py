"""What Torch-Pruning's dependency graph needs to know about this project's layers.

Torch-Pruning (DepGraph, Fang et al., CVPR 2023) traces a network and prunes every layer coupled through a
residual addition together. Three things of ours it cannot see by itself:

- Attention modules scale channels without a layer of their own per channel: ECA's shared kernel does not
  depend on C, but its recorded channel count does; ECA-NS's ``(C, 1, k)`` kernels, and the outer sides of
  SE's and CBAM's channel MLPs, must lose the pruned channels too. ``AttentionPruner`` does that, and the
  graph treats every attention module as one layer whose input and output channels are the same.
- While tracing, the gate is computed from a detached copy of the input (``traceable``): the graph then
  follows only the channel path through the module. Following the gate's own path (pooling, the 1-D
  convolution's padded windows, circular padding) hangs the graph builder on circular ECA and leaves the
  residual channels of CBAM models unpruned.
- The fused step hides a block's last BatchNorm inside one autograd function, so the graph is traced on
  the plain formulation (the same value); the fused step is back on afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..errors import require
from ..layers.factory import ATTENTION_TYPES
from ..layers.fused import plain_formulation
from ..models.widths import resize_attention


def torch_pruning():
    """The Torch-Pruning package (the "prune" extra)."""
    return require("torch_pruning", "prune")


def attention_pruner():
    """A Torch-Pruning pruning function for this project's attention modules (one instance per graph)."""
    tp = torch_pruning()

    class AttentionPruner(tp.pruner.BasePruningFunc):
        """Removes channels from an attention module: input and output channels are the same ones."""

        def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
            drop = set(idxs)
            keep = torch.tensor([i for i in range(layer.channels) if i not in drop], dtype=torch.long)
            before = {name: p.detach() for name, p in layer.named_parameters()}
            old = layer.channels
            resize_attention(layer, len(keep))
            with torch.no_grad():
                for name, p in layer.named_parameters():
                    p.copy_(_select_channels(before[name], old, keep, p.shape))
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer: nn.Module) -> int:
            return layer.channels

        get_in_channels = get_out_channels

    return AttentionPruner()


def _select_channels(value: Tensor, channels: int, keep: Tensor, shape: torch.Size) -> Tensor:
    """``value`` with the kept channels along every axis that had ``channels`` entries and now has fewer."""
    for dim, (before, after) in enumerate(zip(value.shape, shape)):
        if before == channels and after == len(keep) and before != after:
            value = value.index_select(dim, keep.to(value.device))
    return value


@contextmanager
def traceable(model: nn.Module) -> Iterator[nn.Module]:
    """The model as the graph builder should trace it: plain formulation, attention gates detached."""

    def channel_path(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        x = args[0]
        return x + (out - x).detach()  # the value of ``out``, with a gradient path through x only

    hooks = [m.register_forward_hook(channel_path) for m in model.modules() if isinstance(m, ATTENTION_TYPES)]
    try:
        with plain_formulation(model):
            yield model
    finally:
        for h in hooks:
            h.remove()


def custom_pruners() -> dict:
    pruner = attention_pruner()
    return {t: pruner for t in ATTENTION_TYPES}
