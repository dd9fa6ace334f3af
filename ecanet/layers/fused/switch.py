"""When the fused step runs: a block's switch (``fused``, on by default), the devices it may run on (the CPU
only, by default), the model-wide setter and context, and the conditions under which a block takes the plain
formulation even when switched on.

The device policy: the fused tail is a CPU optimisation (fewer passes over memory for a CPU's caches, with
kernels chosen for the CPU). On every other device (CUDA, MPS, XPU, meta) a block runs the plain formulation,
module by module — torchvision's block plus the paper's ECA — which is what cuDNN and Inductor are built
for. ``set_fused(model, True, devices=("cpu", "cuda"))`` runs it elsewhere too, for experiments only: its
kernels have never been checked on a GPU (docs/training.md, "On a GPU").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..factory import ATTENTION_TYPES
from .kernels import is_fx_tracing
from .statistics import is_fusable_norm

DEFAULT_DEVICES = frozenset({"cpu"})


def fuses_on(device: torch.device, devices: Iterable[str] = DEFAULT_DEVICES) -> bool:
    """Whether a tensor on ``device`` may take the fused step: its device type is one of ``devices``."""
    return device.type in devices


def _watched(module: nn.Module | None) -> bool:
    return module is not None and bool(module._forward_hooks or module._forward_pre_hooks)


def fast_path_applies(
    enabled: bool,
    attention: nn.Module | None,
    norm: nn.Module,
    x: torch.Tensor,
    devices: Iterable[str] = DEFAULT_DEVICES,
) -> bool:
    """Whether a block's tail (norm, attention, addition, activation) runs fused on the input ``x``.

    It does when switched on, for an ``x`` on one of ``devices`` (``fuses_on``), with ECA, SE, CBAM or no
    attention after a fusable norm, and while nothing watches the norm or the attention run: the fused step
    computes them without calling the modules, so a module with hooks (``viz``, ``complexity``, your own), a
    trace (TorchScript, torch.fx) or an export (``torch.export``, ONNX) takes the plain formulation, which
    has the same value.
    """
    known = attention is None or type(attention) in ATTENTION_TYPES
    if not (enabled and known and fuses_on(x.device, devices) and is_fusable_norm(norm)):
        return False
    tracing = torch.jit.is_tracing() or is_fx_tracing() or torch.compiler.is_exporting()
    return not (_watched(norm) or _watched(attention) or tracing)


def set_fused(model: nn.Module, enabled: bool, devices: Iterable[str] = DEFAULT_DEVICES) -> nn.Module:
    """Switch every block of ``model`` between the fused tail (True) and the plain formulation; ``devices``
    are the device types on which the fused tail may run (default: the CPU only)."""
    devices = frozenset(devices)
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused, m.fused_devices = enabled, devices
    return model


@contextmanager
def plain_formulation(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily run every block with the plain formulation (for comparisons, benchmarks, graph tracing)."""
    previous = {m: m.fused for m in model.modules() if hasattr(m, "fused")}
    for m in previous:
        m.fused = False
    try:
        yield model
    finally:
        for m, enabled in previous.items():
            m.fused = enabled
