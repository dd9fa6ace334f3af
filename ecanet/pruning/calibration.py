"""Calibration images: what the criteria and the compensation measure the network on (no training).

``calibration`` may be a tensor of images, or an iterable of batches (a DataLoader) whose items are
images or ``(images, labels, ...)`` tuples. Only ``taylor`` needs labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.eca import spatial_mean
from .graph import ATTENTION_TYPES

Batch = tuple[Tensor, Tensor | None]


def as_batches(calibration: Tensor | Iterable, batch_size: int = 32) -> list[Batch]:
    """The calibration images as a list of ``(images, labels or None)`` batches (read once, reused)."""
    if isinstance(calibration, Tensor):
        items: Iterable = calibration.split(batch_size)
    else:
        items = calibration
    batches = []
    for item in items:
        if isinstance(item, Tensor):
            batches.append((item, None))
        elif isinstance(item, (tuple, list)) and item and isinstance(item[0], Tensor):
            labels = item[1] if len(item) > 1 and isinstance(item[1], Tensor) else None
            batches.append((item[0], labels))
        else:
            raise TypeError(
                f"calibration: expected image tensors or (images, labels) batches, got {type(item).__name__}"
            )
    batches = [b for b in batches if b[0].shape[0] > 0]
    if not batches:
        raise ValueError("calibration: no images")
    shapes = {tuple(x.shape[1:]) for x, _ in batches}
    if len(shapes) > 1:
        raise ValueError(f"calibration: images of different shapes {sorted(shapes)}")
    return batches


def input_size(batches: list[Batch]) -> tuple[int, ...]:
    return tuple(batches[0][0].shape[1:])


@dataclass
class GateStatistics:
    """Per attention module: the mean gate of every channel and the mean |output| (gate x |activation|)."""

    gate: dict[str, Tensor]
    gated_activation: dict[str, Tensor]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def gate_statistics(model: nn.Module, batches: list[Batch]) -> GateStatistics:
    """Mean channel gate of every attention module of ``model`` over the calibration images."""
    modules = {n: m for n, m in model.named_modules() if isinstance(m, ATTENTION_TYPES)}
    sums: dict[str, list[Tensor]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
            gate = module.attention(args[0]).float().sum(0)
            gated = spatial_mean(out.abs()).float().sum(0)
            previous = sums.get(name)
            sums[name] = [gate, gated] if previous is None else [previous[0] + gate, previous[1] + gated]

        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in modules.items()]
    n = _run(model, batches, hooks)
    return GateStatistics({k: v[0] / n for k, v in sums.items()}, {k: v[1] / n for k, v in sums.items()})


@torch.no_grad()
def feature_samples(model: nn.Module, batches: list[Batch], samples: int = 1024, seed: int = 0) -> dict[str, Tensor]:
    """Per convolution: its output at up to ``samples`` random (image, position) points, shape (C, samples),
    the channels' feature maps as vectors, for comparing channels with each other."""
    generator = torch.Generator().manual_seed(seed)
    per_batch = max(samples // len(batches), 1)
    columns: dict[str, list[Tensor]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
            flat = out.detach().float().transpose(0, 1).flatten(1)  # (C, N*H*W)
            pick = torch.randperm(flat.shape[1], generator=generator)[:per_batch].to(flat.device)
            columns.setdefault(name, []).append(flat[:, pick].cpu())

        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    _run(model, batches, hooks)
    return {k: torch.cat(v, 1) for k, v in columns.items()}


def accumulate_gradients(model: nn.Module, batches: list[Batch]) -> None:
    """The gradient of the mean cross-entropy over the calibration images, left in ``.grad`` (for the
    first-order Taylor criterion)."""
    if any(y is None for _, y in batches):
        raise ValueError("calibration: the taylor criterion needs labelled batches, (images, labels)")
    total = sum(x.shape[0] for x, _ in batches)
    was_training = model.training
    model.eval()  # BatchNorm on its running statistics: measuring leaves the network as it is
    model.zero_grad(set_to_none=True)
    device = _device(model)
    try:
        for x, y in batches:
            loss = F.cross_entropy(model(x.to(device)), y.to(device), reduction="sum") / total
            loss.backward()
    finally:
        model.train(was_training)


def _run(model: nn.Module, batches: list[Batch], hooks: list) -> int:
    """Forward every batch in eval mode; remove the hooks; the number of images."""
    was_training = model.training
    model.eval()
    device = _device(model)
    try:
        for x, _ in batches:
            model(x.to(device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return sum(x.shape[0] for x, _ in batches)
