"""Models of torchvision's and timm's registries by name (``tv:efficientnet_b0``, ``timm:regnety_002``), and
the replay of how ECA was put into a model (``model.config["adapt"]``, see ``steps.py``): ``load_checkpoint``
rebuilds the same network before loading."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from ..errors import require
from .attach import attach_eca
from .replace_se import replace_se

SOURCES = {"tv": "torchvision", "timm": "timm"}


def is_external(name: str) -> bool:
    """Whether ``name`` is a torchvision (``tv:NAME``) or timm (``timm:NAME``) model name."""
    return name.partition(":")[0] in SOURCES and ":" in name


def create_external(name: str, num_classes: int | None = None, adapt: Sequence[Mapping] = ()) -> nn.Module:
    """The untrained classifier ``tv:NAME`` or ``timm:NAME`` with ``num_classes`` outputs (the registry's
    default when None), then every step of ``adapt`` replayed. Nothing is downloaded."""
    source, _, arch = name.partition(":")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if source == "tv":
        import torchvision

        if arch not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"unknown model {name!r}: torchvision has no classification model {arch!r}")
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    else:
        timm = require("timm", "timm")
        if not timm.is_model(arch):
            raise ValueError(f"unknown model {name!r}: timm has no model {arch!r}")
        model = timm.create_model(arch, pretrained=False, **kwargs)
    head = num_classes if num_classes is not None else getattr(model, "num_classes", 1000)
    model.config = {"model": name, "num_classes": head}
    replay(model, adapt)
    return model


def replay(model: nn.Module, steps: Sequence[Mapping]) -> nn.Module:
    """Apply recorded adaptation steps to a model built as they were first applied to."""
    ops = {"attach_eca": attach_eca, "replace_se": replace_se}
    for step in steps:
        step = dict(step)
        op = step.pop("op", None)
        if op not in ops:
            raise ValueError(f"adapt: unknown step {op!r} (attach_eca, replace_se)")
        ops[op](model, **step)
    return model
