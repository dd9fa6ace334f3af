"""The zoo in timm's registry, so that tools built on timm take ECA backbones by name:
``timm.create_model("ecanet_eca_resnet50", features_only=True, out_indices=..., output_stride=16,
in_chans=1)`` and segmentation-models-pytorch's ``"tu-ecanet_eca_resnet50"`` encoders.

Registration is explicit (``ecanet.register_timm()``): ``import ecanet`` neither needs timm nor pays for
importing it. Weights come only from a local file given through timm's pretrained-config mechanism,
``pretrained=True, pretrained_cfg_overlay=dict(file="eca_resnet50.safetensors")``, read by this
project's loader (safetensors, or a pickle-free ``torch.load``; a file that does not fit is an error).
Nothing is downloaded.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from torch import nn

from .errors import require
from .models import ARCHS, create_model, list_models, parse_model_name
from .models.features import FeatureNet
from .weights import load_state, read_weights

PREFIX = "ecanet_"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

default_cfgs: dict[str, dict] = {}  # read by timm's register_model: one pretrained config per name


def _cfg(name: str) -> dict:
    arch = ARCHS[parse_model_name(name)[1]]
    cifar = arch.dataset == "cifar"
    return dict(
        num_classes=arch.num_classes,
        input_size=(3, 32, 32) if cifar else (3, 224, 224),
        pool_size=(8, 8) if cifar else (7, 7),
        crop_pct=1.0 if cifar else 0.875,
        interpolation="bilinear",
        mean=CIFAR_MEAN if cifar else IMAGENET_MEAN,
        std=CIFAR_STD if cifar else IMAGENET_STD,
        first_conv="features.0.0" if arch.family == "mobilenet_v2" else "conv1",
        classifier="classifier.1" if arch.family == "mobilenet_v2" else "fc",
        license="mit",
    )


def create_timm(
    name: str,
    pretrained: bool = False,
    pretrained_cfg=None,
    pretrained_cfg_overlay: dict | None = None,
    features_only: bool = False,
    out_indices=None,
    cache_dir=None,
    **kwargs,
) -> nn.Module:
    """timm's entrypoint for zoo model ``name``: ``create_model`` with timm's arguments; with
    ``pretrained``, the weights of the configured local ``file`` (a head of another class count stays fresh,
    as in timm). ``cache_dir`` is accepted and unused: nothing is downloaded."""
    from timm.models import resolve_pretrained_cfg

    cfg = resolve_pretrained_cfg(
        PREFIX + name, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay
    )
    model = create_model(name, **kwargs)
    if pretrained:
        if not cfg.file:
            raise ValueError(
                f"{PREFIX}{name}: pretrained=True needs a local weights file: "
                "pretrained_cfg_overlay=dict(file=PATH) (nothing is downloaded)"
            )
        load_state(model, read_weights(cfg.file)[0], str(cfg.file), fresh=("head",))
    if features_only:
        model = FeatureNet(model, out_indices)
    model.pretrained_cfg = model.default_cfg = cfg.to_dict()
    return model


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    def entry(pretrained: bool = False, **kwargs) -> nn.Module:
        return create_timm(name, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = PREFIX + name
    entry.__module__ = __name__
    entry.__doc__ = f"ecanet's {name} (see ecanet.create_model)."
    return entry


def register_timm() -> list[str]:
    """Register every zoo model in timm as ``ecanet_<name>`` (idempotent); returns the names. Needs the
    "timm" extra."""
    require("timm", "timm")
    from timm.models import is_model, register_model

    names = []
    for name in list_models():
        full = PREFIX + name
        if not is_model(full):
            default_cfgs[full] = _cfg(name)
            setattr(sys.modules[__name__], full, register_model(_entrypoint(name)))
        names.append(full)
    return names
