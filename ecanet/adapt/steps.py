"""The record of how ECA was put into a model: each ``replace_se`` / ``attach_eca`` call appends its arguments
to ``model.config["adapt"]``, which ``save_weights`` writes into the file's metadata."""

from __future__ import annotations

from torch import nn


def record(model: nn.Module, op: str, **kwargs) -> None:
    """Append one adaptation step to ``model.config["adapt"]`` (JSON: lists, numbers, strings)."""
    if not isinstance(getattr(model, "config", None), dict):
        model.config = {}
    step = {"op": op} | {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    model.config.setdefault("adapt", []).append(step)
