"""Swap squeeze-and-excitation for ECA in a CNN a user already has: ECA was designed as SE's drop-in
(Section 3.2: the same pooling and gate, without SE's dimensionality-reducing MLP). Every SE module of the
common implementations becomes an ECA over the same channels, at the same name, keeping the gate's kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from torch import nn

from ..layers import ECA, SE
from .steps import record

# The SE modules recognised, by where they are defined and their class name (timm is optional: its modules
# are matched by name, never imported here).
SE_CLASSES = {
    ("torchvision.ops.misc", "SqueezeExcitation"),
    ("timm.layers.squeeze_excite", "SEModule"),
    ("timm.layers.squeeze_excite", "EffectiveSEModule"),
    ("timm.layers.squeeze_excite", "SqueezeExcite"),
    ("timm.models._efficientnet_blocks", "SqueezeExcite"),
}


class Swap(NamedTuple):
    name: str
    kind: str  # the SE module's class
    channels: int
    kernel_size: int
    gate: str
    removed: int  # SE's parameters
    added: int  # ECA's


@dataclass
class ReplaceReport:
    """Where SE became ECA: one Swap per module."""

    swaps: list[Swap] = field(default_factory=list)

    @property
    def removed(self) -> int:
        return sum(s.removed for s in self.swaps)

    @property
    def added(self) -> int:
        return sum(s.added for s in self.swaps)

    def __str__(self) -> str:
        rows = [
            f"{s.name}: {s.kind} -> ECA, C={s.channels}, k={s.kernel_size}, {s.gate}, -{s.removed} +{s.added} params"
            for s in self.swaps
        ]
        return "\n".join(rows + [f"{len(self.swaps)} SE modules replaced: -{self.removed} +{self.added} parameters"])


def is_squeeze_excitation(module: nn.Module) -> bool:
    """Whether ``module`` is an SE module of torchvision, timm or this package."""
    cls = type(module)
    return isinstance(module, SE) or (cls.__module__, cls.__name__) in SE_CLASSES


def _channels(se: nn.Module) -> int:
    """The channels SE scales: its first layer's input width."""
    first = next(m for m in se.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    return first.in_channels if isinstance(first, nn.Conv2d) else first.in_features


def _gate(se: nn.Module) -> str:
    """ "hard_sigmoid" where the SE gates with one (MobileNetV3, GhostNet), else "sigmoid"."""
    names = [type(m).__name__.lower() for m in se.modules()]
    names += [getattr(getattr(se, a, None), "__name__", "").lower() for a in ("gate_fn", "gate")]
    return "hard_sigmoid" if any("hard" in n and "sigmoid" in n for n in names) else "sigmoid"


def replace_se(
    model: nn.Module,
    kernel_size: int | None = None,
    gamma: float = 2,
    beta: float = 1,
    padding: str = "zeros",
) -> ReplaceReport:
    """Replace, in place, every squeeze-and-excitation module of ``model`` (torchvision's
    ``SqueezeExcitation``; timm's ``SEModule``, ``EffectiveSEModule``, ``SqueezeExcite``, as in its
    EfficientNet, MobileNetV3, RegNetY, ReXNet and GhostNet; this package's ``SE``) with an ECA over the same
    channels under the same name, so its weights are ``<name>.conv.weight``. The gate keeps its kind (hard
    sigmoid stays hard); ``kernel_size=None`` takes the adaptive k per module (Eq. 9). Every other tensor
    keeps its name and value. A model without SE is a ValueError naming it. The call is recorded in
    ``model.config["adapt"]`` (see ``attach_eca``).
    """
    report = ReplaceReport()
    targets = [(name, m) for name, m in model.named_modules() if name and is_squeeze_excitation(m)]
    for name, se in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        channels, gate = _channels(se), _gate(se)
        eca = ECA(channels, kernel_size, gamma, beta, padding=padding, gate=gate)
        ref = next(se.parameters(), None)
        if ref is not None:
            eca = eca.to(device=ref.device, dtype=ref.dtype)
        setattr(parent, attr, eca)
        removed, added = sum(p.numel() for p in se.parameters()), sum(p.numel() for p in eca.parameters())
        report.swaps.append(Swap(name, type(se).__name__, channels, eca.kernel_size, gate, removed, added))
    if not report.swaps:
        raise ValueError(
            f"replace_se: {type(model).__name__} has no squeeze-and-excitation module (torchvision's "
            "SqueezeExcitation; timm's SEModule, EffectiveSEModule, SqueezeExcite; ecanet's SE); "
            "attach_eca adds ECA where there is none"
        )
    record(model, "replace_se", kernel_size=kernel_size, gamma=gamma, beta=beta, padding=padding)
    return report
