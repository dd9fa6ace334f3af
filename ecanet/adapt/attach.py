"""Put ECA into CNNs users already have, at the paper's position: on the residual branch after its last
BatchNorm, before the addition (ResNet-like blocks), or after the projection BatchNorm (inverted residuals);
or, for any other network (YOLO necks, custom nets), after the modules named by glob patterns.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..layers import ECA, is_attention
from .families import Spot, spot
from .replace_se import is_squeeze_excitation
from .steps import record


class Site(NamedTuple):
    block: str
    channels: int
    kernel_size: int
    params: int


@dataclass
class AttachReport:
    """Where ECA went: one Site per insertion."""

    sites: list[Site] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # blocks that have attention of their own (SE): left as they are

    @property
    def params(self) -> int:
        return sum(s.params for s in self.sites)

    def __str__(self) -> str:
        rows = [f"{s.block}: C={s.channels}, k={s.kernel_size}" for s in self.sites]
        kept = f"; {len(self.kept)} blocks keep their own attention" if self.kept else ""
        return "\n".join(rows + [f"{len(self.sites)} ECA layers, {self.params} parameters{kept}"])


class _AttentionHook:
    """Forward hook that applies attention to a module's output (NHWC outputs through a permute).

    Blocks with a fixed forward (torchvision's, most of timm's) get ECA where the paper puts it without
    renaming any existing parameter: the ECA weights appear as ``<holder>.eca.conv.weight``.
    """

    def __init__(self, attention: nn.Module, channels_last: bool = False) -> None:
        self.attention, self.channels_last = attention, channels_last

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        if self.channels_last:
            return self.attention(output.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.attention(output)


def _output_channels(model: nn.Module, targets: dict[str, nn.Module], input_size: Sequence[int]) -> dict[str, int]:
    """Each target's output channels: read off the module (``out_channels``, ``num_features``), else from one
    forward of a zero input of ``input_size`` (C, H, W) without autograd."""
    channels = {n: getattr(m, "out_channels", None) or getattr(m, "num_features", None) for n, m in targets.items()}
    unknown = {n: targets[n] for n, c in channels.items() if not isinstance(c, int)}
    if unknown:
        seen: dict[str, int] = {}

        def record(name: str):
            def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:  # None: the output stays
                seen.setdefault(name, output.shape[1])

            return hook

        hooks = [m.register_forward_hook(record(n)) for n, m in unknown.items()]
        ref, training = next(model.parameters(), None), model.training
        x = torch.zeros(1, *input_size, device=ref.device if ref is not None else None)
        try:
            with torch.no_grad():  # in eval mode: BatchNorm's running statistics stay as they are
                model.eval()(x)
        finally:
            model.train(training)
            for h in hooks:
                h.remove()
        for n in unknown:
            if n not in seen:
                raise ValueError(f"attach_eca: where= matched {n!r}, which one forward of {tuple(x.shape)} never ran")
            channels[n] = seen[n]
    return channels


def _attach_where(model: nn.Module, where: Sequence[str], make_eca, input_size: Sequence[int]) -> AttachReport:
    """ECA after the output of every module whose name matches a pattern of ``where``."""
    names = [n for n, _ in model.named_modules() if n]
    targets: dict[str, nn.Module] = {}
    for pattern in where:
        matched = fnmatch.filter(names, pattern)
        if not matched:
            raise ValueError(f"attach_eca: where= pattern {pattern!r} matches no module of {type(model).__name__}")
        targets |= {n: model.get_submodule(n) for n in matched}
    report = AttachReport()
    for name, channels in _output_channels(model, targets, input_size).items():
        module = targets[name]
        if hasattr(module, "eca") or (isinstance(module, nn.Sequential) and is_attention(module[-1])):
            raise ValueError(f"attach_eca: {name!r} already has ECA")
        how = "append" if isinstance(module, nn.Sequential) else "hook"  # a layer at its end, or on its output
        report.sites.append(_put(Spot("where", how, module, channels, module), make_eca(channels, module), name))
    return report


def _attention_in(scope: nn.Module, busy: bool) -> str | None:
    """ "ECA" if ``scope`` already holds ECA, "other" if another attention module (SE, CBAM, ...), else None."""
    if any(isinstance(m, ECA) for m in scope.modules()):
        return "ECA"
    return "other" if busy or any(is_attention(m) or is_squeeze_excitation(m) for m in scope.modules()) else None


def _put(site: Spot, eca: ECA, where: str) -> Site:
    if site.how == "ecanet":
        site.holder.attn_name, site.holder.eca = "eca", eca
    elif site.how == "slot":
        setattr(site.holder, site.attr, eca)
    elif site.how == "append":
        site.reads.append(eca)
    else:
        site.holder.eca = eca
        site.reads.register_forward_hook(_AttentionHook(eca, site.channels_last))
    return Site(where, site.channels, eca.kernel_size, sum(p.numel() for p in eca.parameters()))


def attach_eca(
    model: nn.Module,
    kernel_size: int | None = None,
    gamma: float = 2,
    beta: float = 1,
    padding: str = "zeros",
    shared: bool = True,
    where: Sequence[str] | None = None,
    input_size: Sequence[int] = (3, 224, 224),
) -> AttachReport:
    """Insert ECA in place into every supported block of ``model`` and report where it went.

    Supported (``families.py``; the table in docs/weights.md): ResNet/ResNeXt/Wide-ResNet (torchvision, timm,
    this package), MobileNetV2/V3, ConvNeXt, RegNetX (RegNetY carries SE: ``replace_se``), DenseNet, VGG,
    ShuffleNetV2, CSPNet/CSPDarknet. ``kernel_size=None`` picks the adaptive size per block. Existing weights
    are untouched. Raises ValueError, before changing anything, when no block is supported or one already has
    attention.

    ``where``: glob patterns over module names (``["backbone.*.cv2", "neck.*"]``) for any other network: ECA
    goes after each matched module's output, its channels read off the module or from one forward of a zero
    input of ``input_size``; its weights are ``<name>.eca.conv.weight`` (``<name>.<last>`` for a Sequential,
    to which it is appended). A pattern that matches nothing is an error naming it.

    The call is recorded in ``model.config["adapt"]``: ``save_weights`` writes it, ``load_checkpoint`` replays it.
    """

    def make_eca(channels: int, near: nn.Module) -> ECA:
        eca = ECA(channels, kernel_size, gamma, beta, padding=padding, shared=shared)
        ref = next(near.parameters(), None)
        return eca.to(device=ref.device, dtype=ref.dtype) if ref is not None else eca

    how = dict(kernel_size=kernel_size, gamma=gamma, beta=beta, padding=padding, shared=shared)
    if where is not None:
        report = _attach_where(model, where, make_eca, input_size)
        record(model, "attach_eca", **how, where=list(where), input_size=list(input_size))
        return report
    spots, kept = [], []
    for name, block in model.named_modules():
        found = spot(block)
        for child, site in found if isinstance(found, list) else [("", found)] if found else []:
            where = ".".join(n for n in (name, child) if n)
            held = _attention_in(site.holder if child else block, site.busy)
            if held == "ECA":  # checked for every block before any is changed
                raise ValueError(f"attach_eca: block {where!r} ({type(block).__name__}) already has ECA")
            if held:
                kept.append(where)
            else:
                spots.append((where, site, block))
    if not spots:
        why = f"every supported block already has attention ({len(kept)}; replace_se swaps SE for ECA)"
        raise ValueError(
            f"attach_eca: {type(model).__name__}: {why}"
            if kept
            else f"attach_eca: {type(model).__name__} has no supported block (the families of docs/weights.md: "
            "ResNet, MobileNetV2/V3, ConvNeXt, RegNet, DenseNet, VGG, ShuffleNetV2, CSP/Darknet): name where ECA "
            "goes with where=[...], or swap its SE modules with replace_se"
        )
    report = AttachReport([_put(site, make_eca(site.channels, block), where) for where, site, block in spots], kept)
    record(model, "attach_eca", **how)
    return report
