"""When the fused step runs: a block's switch (``fused``, on by default), the model-wide setter and context,
and the conditions under which a block takes the plain formulation even when switched on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..eca import ECA
from .statistics import is_fusable_norm


def fast_path_applies(enabled: bool, attention: nn.Module | None, norm: nn.Module) -> bool:
    """Whether a block's tail (norm, attention, addition, activation) runs fused.

    It does when switched on, with ECA after a fusable norm, and while nothing watches the ECA module run:
    the fused step computes the gate without calling the module, so a module with hooks (``viz``,
    ``complexity``, your own), a trace (TorchScript) or an export (``torch.export``, ONNX) takes the plain
    formulation, which has the same value.
    """
    if not (enabled and isinstance(attention, ECA) and is_fusable_norm(norm)):
        return False
    watched = attention._forward_hooks or attention._forward_pre_hooks
    return not (watched or torch.jit.is_tracing() or torch.compiler.is_exporting())


def set_fused(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every block of ``model`` between the fused ECA step (True) and the plain formulation."""
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused = enabled
    return model


@contextmanager
def plain_formulation(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily run every block with the plain ECA formulation (for comparisons and benchmarks)."""
    previous = {m: m.fused for m in model.modules() if hasattr(m, "fused")}
    set_fused(model, False)
    try:
        yield model
    finally:
        for m, enabled in previous.items():
            m.fused = enabled
