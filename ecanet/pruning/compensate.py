"""Pruning compensation without retraining: refit the layers that lost input channels so that their output
on calibration images matches the unpruned network's (the idea of CaP: reconstruct features from a fraction
of the data, no labels, no gradient steps).

For a layer that reads pruned channels, let X be its input in the pruned network, unfolded into one row per
output position (the kernel's receptive field, plus 1 for a bias), and Y the unpruned layer's output at the
same positions, on the output channels the pruned layer kept. The new weights solve the least-squares
problem min_W ||X W - Y||^2 (+ a small ridge term, so that it is well posed when X has fewer rows than
columns); X^T X and X^T Y are accumulated over the calibration batches. Layers are refitted in the order the
network runs them, so each one sees the inputs its refitted predecessors produce.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .calibration import Batch


def _rows(layer: nn.Module, x: Tensor) -> Tensor:
    """The layer's input as one row per output position (with a column of ones when it has a bias)."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # (N, D, L)
        rows = cols.transpose(1, 2).flatten(0, 1)
    else:
        rows = x.flatten(0, -2)
    if layer.bias is not None:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], 1)
    return rows.double()


def _targets(layer: nn.Module, y: Tensor) -> Tensor:
    return (y.flatten(2).transpose(1, 2).flatten(0, 1) if isinstance(layer, nn.Conv2d) else y.flatten(0, -2)).double()


def _weights(layer: nn.Module) -> Tensor:
    """The layer's weights as the (D, C_out) matrix that multiplies ``_rows``."""
    w = layer.weight.detach().flatten(1).double()
    if layer.bias is not None:
        w = torch.cat([w, layer.bias.detach().double()[:, None]], 1)
    return w.T


@torch.no_grad()
def refit(
    layer: nn.Conv2d | nn.Linear,
    pairs: Iterable[tuple[Tensor, Tensor]],
    ridge: float = 1e-6,
    max_rows: int | None = 8192,
) -> dict:
    """Refit ``layer``'s weights by least squares so that ``layer(input)`` approximates ``target`` over the
    (input, target) pairs; return the relative reconstruction error before and after,
    ||X W - Y||^2 / ||Y||^2. ``ridge`` is relative to the mean diagonal of X^T X. Only plain convolutions
    (groups=1) and linear layers are refitted. At most ``max_rows`` output positions per pair, drawn at
    random with a fixed seed, enter the sums (None: all)."""
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        raise ValueError("refit: grouped convolutions are not refitted")
    gram = cross = None
    target_energy = 0.0
    generator = torch.Generator().manual_seed(0)
    for x, y in pairs:
        rows, targets = _rows(layer, x), _targets(layer, y)
        if max_rows is not None and len(rows) > max_rows:
            pick = torch.randperm(len(rows), generator=generator)[:max_rows].to(rows.device)
            rows, targets = rows[pick], targets[pick]
        gram = rows.T @ rows if gram is None else gram + rows.T @ rows
        cross = rows.T @ targets if cross is None else cross + rows.T @ targets
        target_energy += float((targets**2).sum())
    if gram is None:
        raise ValueError("refit: no calibration batches")
    w0 = _weights(layer)

    def error(w: Tensor) -> float:  # ||XW - Y||^2 = tr(W^T G W) - 2 tr(W^T C) + ||Y||^2
        return (float((w * (gram @ w)).sum() - 2 * (w * cross).sum()) + target_energy) / max(target_energy, 1e-30)

    damp = ridge * gram.diagonal().mean().clamp_min(1e-12)
    w = torch.linalg.solve(gram + damp * torch.eye(len(gram), dtype=gram.dtype), cross)
    before, after = error(w0), error(w)
    if after < before:
        weight = w.T
        if layer.bias is not None:
            layer.bias.copy_(weight[:, -1].to(layer.bias))
            weight = weight[:, :-1]
        layer.weight.copy_(weight.reshape(layer.weight.shape).to(layer.weight))
    return {"error_before": before, "error_after": min(after, before)}


class _Stop(Exception):
    """Ends a forward pass once the layer of interest has run."""


def _capture(model: nn.Module, layer: nn.Module, x: Tensor, output: bool) -> Tensor:
    """``layer``'s input (or output) when ``model`` runs on x, without running the rest of the network."""
    seen = {}

    def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
        seen["value"] = out if output else args[0]
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen["value"]


def _execution_order(model: nn.Module, x: Tensor) -> list[str]:
    order: list[str] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, n=n: order.append(n) if n not in order else None)
        for n, m in model.named_modules()
    ]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return order


@torch.no_grad()
def compensate(
    pruned: nn.Module,
    original: nn.Module,
    calibration: list[Batch],
    kept: Mapping[str, Mapping[str, list[int]]],
    ridge: float = 1e-6,
) -> list[dict]:
    """Refit every layer of ``pruned`` that lost input channels (``kept[name]["in"]`` shorter than the
    original's input) so that it reproduces ``original``'s output on ``calibration``. Returns one record per
    refitted layer: name, relative error before and after. Both networks run in eval mode."""
    modes = pruned.training, original.training
    pruned.eval()
    original.eval()
    device = next(pruned.parameters()).device
    own, ref = dict(pruned.named_modules()), dict(original.named_modules())
    results = []
    try:
        for name in _execution_order(pruned, calibration[0][0][:1].to(device)):
            layer = own[name]
            if not _refittable(layer) or len(kept.get(name, {}).get("in", ())) in (0, _in(ref[name])):
                continue
            out_keep = torch.tensor(kept[name].get("out", range(_out(ref[name]))), device=device)

            def pairs(layer=layer, name=name, out_keep=out_keep):
                for x, _ in calibration:
                    x = x.to(device)
                    target = _capture(original, ref[name], x, output=True).index_select(1, out_keep)
                    yield _capture(pruned, layer, x, output=False), target

            results.append({"layer": name, **refit(layer, pairs(), ridge)})
    finally:
        pruned.train(modes[0])
        original.train(modes[1])
    return results


def _refittable(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1)


def _in(layer: nn.Module) -> int:
    return layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features


def _out(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
