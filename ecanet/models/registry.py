"""The model zoo: every backbone of the paper by name, with the released per-stage ECA kernel sizes.

Names are ``{attention}_{arch}`` (``eca_resnet50``, ``se_mobilenet_v2``) or the bare arch without
attention (``resnet50``). Attention: eca, ceca (circular), eca_ns (non-shared), se, cbam.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..layers import ATTENTIONS, ECA_ATTENTIONS
from .dilation import set_output_stride
from .features import FeatureNet
from .input_channels import set_in_chans
from .mobilenetv2 import SETTING, MobileNetV2
from .resnet import BasicBlock, Bottleneck, ResNet
from .widths import read_widths_file, resized


@dataclass(frozen=True)
class Arch:
    """A backbone architecture without attention: everything the package knows about it, in one place
    (building, weights inference, stage freezing and the detectors read it)."""

    family: str  # "resnet" or "mobilenet_v2"
    block: str  # "basic", "bottleneck" or "inverted_residual"
    layers: tuple[int, ...]  # blocks per stage
    released_k: tuple[int, ...]  # ECA kernel size per stage of the authors' released ImageNet models
    num_classes: int  # default head size
    dataset: str  # "imagenet" or "cifar"

    def build(self, **kwargs) -> nn.Module:
        """The network: build(num_classes=, attn=, kernel_sizes=, **architecture kwargs)."""
        if self.family == "mobilenet_v2":
            return MobileNetV2(**kwargs)
        block = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
        if self.dataset == "cifar":
            return ResNet(block, self.layers, widths=(16, 32, 64), stem="cifar", **kwargs)
        return ResNet(block, self.layers, **kwargs)


# Released kernel sizes: the authors' ImageNet files (e.g. eca_resnet50_k3557) fix k per stage. They
# differ from the adaptive rule (which gives 5,5,5,7 for ResNet-50's 256..2048 channels); see
# docs/weights.md. MobileNetV2: k = 1 where the block outputs fewer than 96 channels, else 3 (authors' code).
ARCHS: dict[str, Arch] = {
    "resnet18": Arch("resnet", "basic", (2, 2, 2, 2), (3, 5, 7, 7), 1000, "imagenet"),
    "resnet34": Arch("resnet", "basic", (3, 4, 6, 3), (3, 3, 5, 7), 1000, "imagenet"),
    "resnet50": Arch("resnet", "bottleneck", (3, 4, 6, 3), (3, 5, 5, 7), 1000, "imagenet"),
    "resnet101": Arch("resnet", "bottleneck", (3, 4, 23, 3), (3, 3, 5, 7), 1000, "imagenet"),
    "resnet152": Arch("resnet", "bottleneck", (3, 8, 36, 3), (3, 3, 5, 7), 1000, "imagenet"),
    "mobilenet_v2": Arch(
        "mobilenet_v2",
        "inverted_residual",
        tuple(n for _, _, n, _ in SETTING),
        tuple(1 if c < 96 else 3 for _, c, _, _ in SETTING),
        1000,
        "imagenet",
    ),
}
# CIFAR ResNets (He et al. Section 4.2) have no released ECA weights; their "released" k is the adaptive one
# for 16/32/64 channels (3 everywhere).
for _depth in (20, 32, 44, 56, 110):
    _n = (_depth - 2) // 6
    ARCHS[f"resnet{_depth}"] = Arch("resnet", "basic", (_n, _n, _n), (3, 3, 3), 10, "cifar")


def find_arch(family: str, block: str, layers: Sequence[int]) -> str | None:
    """The zoo arch with these blocks per stage, if any (e.g. to name the model of a weights file)."""
    return next(
        (name for name, a in ARCHS.items() if (a.family, a.block, a.layers) == (family, block, tuple(layers))), None
    )


def stage_shapes(arch: str, image_size: int | None = None) -> list[tuple[int, int, int, int]]:
    """(output channels, map side, blocks, released k) of every stage of a zoo network at ``image_size``
    (default 224 for ImageNet networks: ResNet strides 4, 8, 16, 32, MobileNetV2's stem 2 then its
    setting's strides; 32 for CIFAR ResNets, strides 1, 2, 4), e.g. to benchmark one stage's block alone."""
    spec = ARCHS[arch]
    size = image_size or (32 if spec.dataset == "cifar" else 224)
    if spec.family == "mobilenet_v2":
        strides = [s for _, _, _, s in SETTING]
        sides = [size // (2 * math.prod(strides[: i + 1])) for i in range(len(SETTING))]
        return [(c, side, n, k) for (_, c, n, _), side, k in zip(SETTING, sides, spec.released_k, strict=True)]
    expansion = 4 if spec.block == "bottleneck" else 1
    width, first_stride = (16, 1) if spec.dataset == "cifar" else (64, 4)
    return [
        (width * 2**i * expansion, size // (first_stride * 2**i), n, k)
        for i, (n, k) in enumerate(zip(spec.layers, spec.released_k, strict=True))
    ]


def stage_eca_modules(model: nn.Module) -> list[str] | None:
    """The name of the first ECA module of every stage of a zoo model (where the stage's k is read), or
    None without ECA."""
    from ..layers import ECA

    names = []
    for prefix in model.stage_prefixes():
        found = next((n for n, m in model.named_modules() if n.startswith(prefix + ".") and isinstance(m, ECA)), None)
        if found is None:
            return None
        names.append(found)
    return names


def _split(name: str) -> tuple[str | None, str]:
    for attn in sorted(ATTENTIONS, key=len, reverse=True):
        if name.startswith(attn + "_") and name[len(attn) + 1 :] in ARCHS:
            return attn, name[len(attn) + 1 :]
    if name in ARCHS:
        return None, name
    return None, ""


def _all_names() -> list[str]:
    """Grouped by architecture, plain model first, then the attentions in factory order."""
    return [arch if a is None else f"{a}_{arch}" for arch in ARCHS for a in (None, *ATTENTIONS)]


def list_models(pattern: str = "*", dataset: str | None = None) -> list[str]:
    """Names of the zoo's models matching a shell-style ``pattern``; ``dataset`` "imagenet" or "cifar"."""
    return [
        n
        for n in _all_names()
        if fnmatch.fnmatch(n, pattern) and (dataset is None or ARCHS[_split(n)[1]].dataset == dataset)
    ]


def parse_model_name(name: str) -> tuple[str | None, str]:
    """Split a zoo name into (attention or None, arch); unknown names get a ValueError with suggestions."""
    attn, arch = _split(name)
    if not arch:
        close = difflib.get_close_matches(name, _all_names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `ecanet info` or ecanet.list_models()"
        raise ValueError(f"unknown model {name!r}{hint}")
    return attn, arch


def resolve_kernel_sizes(name: str, eca_k: str | Sequence[int] = "released") -> list[int | None] | None:
    """Per-stage ECA kernel sizes for ``name``: "released", "adaptive" (None per stage) or explicit ints."""
    attn, arch = parse_model_name(name)
    spec = ARCHS[arch]
    if attn not in ECA_ATTENTIONS:
        if eca_k != "released":
            raise ValueError(f"eca_k={eca_k!r} was given, but {name} has no ECA attention")
        return None
    if eca_k == "released":
        return list(spec.released_k)
    if eca_k == "adaptive":
        return [None] * len(spec.released_k)
    if isinstance(eca_k, str):
        raise ValueError(f"eca_k must be 'released', 'adaptive' or {len(spec.released_k)} ints, got {eca_k!r}")
    ks = [int(k) for k in eca_k]
    if len(ks) != len(spec.released_k) or any(k < 1 or k % 2 == 0 for k in ks):
        raise ValueError(
            f"eca_k for {name} must be {len(spec.released_k)} positive odd ints (one per stage), got {list(eca_k)}"
        )
    return ks


def create_model(
    name: str,
    num_classes: int | None = None,
    eca_k: str | Sequence[int] = "released",
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    output_stride: int = 32,
    in_chans: int = 3,
    widths: str | Path | Mapping[str, list[int]] | None = None,
    **kwargs,
) -> nn.Module:
    """Build zoo model ``name``.

    Args:
        num_classes: head size; None gives 1000 for ImageNet models and 10 for CIFAR ones.
        eca_k: ECA kernel size per stage: "released" (the authors' ImageNet models, default),
            "adaptive" (the paper's Eq. 9 per block from its channel count) or a list with one int per stage.
        features_only: return a ``FeatureNet``: the maps of the levels ``out_indices`` (default all: the
            stem and every stage) as a list, with ``feature_info`` (timm's convention), no head.
        output_stride: 32, or 16 / 8 with the last strides turned into dilations (dense prediction).
        in_chans: input channels; RGB weights loaded later are adapted (``adapt_input_conv``).
        widths: a width configuration to train from scratch: a file written by ``ecanet search-widths`` (its
            ECA kernel rule included) or ``{layer: [in, out]}``; the parameters are drawn afresh.
        kwargs: passed to the architecture (e.g. ``zero_init_residual`` for ResNets, ``width_mult``).
    """
    attn, arch = parse_model_name(name)
    spec = ARCHS[arch]
    num_classes = spec.num_classes if num_classes is None else num_classes
    model = spec.build(num_classes=num_classes, attn=attn, kernel_sizes=resolve_kernel_sizes(name, eca_k), **kwargs)
    model.config = {"model": name, "num_classes": num_classes, "eca_k": stage_kernel_sizes(model)}
    if widths is not None:
        adaptive = False
        if isinstance(widths, (str, Path)):
            widths, adaptive = read_widths_file(widths, name)
        resized(model, widths, adaptive_k=adaptive)
        model.config["eca_k"] = stage_kernel_sizes(model)
    if output_stride != 32:
        set_output_stride(model, output_stride)
        model.config["output_stride"] = output_stride
    if in_chans != 3:
        set_in_chans(model, in_chans)
        model.config["in_chans"] = in_chans
    if features_only:
        return FeatureNet(model, out_indices)
    if out_indices is not None:
        raise ValueError("out_indices is for features_only=True")
    return model


def stage_kernel_sizes(model: nn.Module) -> list[int] | None:
    """The ECA kernel size of the first block of every stage of a zoo model, or None without ECA."""
    names = stage_eca_modules(model)
    if names is None:
        return None
    modules = dict(model.named_modules())
    return [modules[n].kernel_size for n in names]
