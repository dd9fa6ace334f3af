"""Attention by name: the one place where blocks turn "eca", "se", ... into modules.

Adding an attention variant is one module file plus one entry here; every backbone then gets it.
"""

from __future__ import annotations

from torch import nn

from .cbam import CBAM
from .eca import ECA
from .se import SE

# name -> (attribute name inside a block, builder(channels, kernel_size))
_ATTENTIONS = {
    "se": ("se", lambda c, k: SE(c)),
    "cbam": ("cbam", lambda c, k: CBAM(c)),
    "eca": ("eca", lambda c, k: ECA(c, k)),
    "ceca": ("eca", lambda c, k: ECA(c, k, padding="circular")),
    "eca_ns": ("eca", lambda c, k: ECA(c, k, shared=False)),
}
ATTENTIONS: tuple[str, ...] = tuple(_ATTENTIONS)
ECA_ATTENTIONS: tuple[str, ...] = ("eca", "ceca", "eca_ns")
ATTENTION_TYPES = (ECA, SE, CBAM)


def _check(name: str) -> None:
    if name not in _ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; choose one of {ATTENTIONS} or None")


def attention_attribute(name: str | None) -> str | None:
    """The submodule name a block gives this attention (ECA variants are all called ``eca``)."""
    if name is None:
        return None
    _check(name)
    return _ATTENTIONS[name][0]


def create_attention(name: str | None, channels: int, kernel_size: int | None = None) -> nn.Module | None:
    """Build attention ``name`` for ``channels`` channels; ``kernel_size`` applies to ECA variants only
    (None: the adaptive size)."""
    if name is None:
        return None
    _check(name)
    return _ATTENTIONS[name][1](channels, kernel_size)


def is_attention(module: nn.Module) -> bool:
    return isinstance(module, ATTENTION_TYPES)
