"""Loading and saving weights: the authors' released files, this project's checkpoints, safetensors and
torchvision's ImageNet weights, always without unpickling arbitrary objects (``weights_only`` loading).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor, nn

from .adapt.external import create_external, is_external, replay
from .errors import CheckpointError
from .layers import ECA_ATTENTIONS, is_attention
from .models import ARCHS, create_model, parse_model_name
from .models.input_channels import adapt_state
from .models.registry import find_arch, stage_eca_modules
from .models.widths import apply_widths
from .training.checkpoint import atomic_write, is_training_checkpoint

log = logging.getLogger("ecanet")

PathLike = str | os.PathLike
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers


@dataclass
class LoadReport:
    """What loading a state dict into a model did."""

    copied: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file: left as initialised
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model: ignored
    new_attention: list[str] = field(default_factory=list)  # missing keys that belong to attention modules
    new_head: list[str] = field(default_factory=list)  # classifier keys left fresh (other num_classes)


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{"


def _torch_load(path: Path, map_location: str | torch.device) -> object:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = next((line.strip() for line in str(e).splitlines() if "unsupported" in line.lower()), "")
        if "global" not in reason.lower():  # not a pickle of objects at all, e.g. a text or JSON file
            raise CheckpointError(f"{path}: not a PyTorch or safetensors checkpoint ({reason or e})") from None
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects other than tensors and plain containers, "
            f"which weights-only loading does not unpickle ({reason})"
        ) from None
    except (RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({str(e).splitlines()[0][:120]})") from None
    except Exception as e:  # the unpickler raises KeyError/ValueError/... on files that are not pickles
        raise CheckpointError(
            f"{path}: not a PyTorch or safetensors checkpoint ({type(e).__name__}: {str(e)[:80]})"
        ) from None


def _strip(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def read_weights(path: PathLike, map_location: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict]:
    """Read a weights file into (state_dict, metadata) without building a model.

    Accepts safetensors, a plain state dict, the authors' ``{"state_dict": ..., "arch": ...}`` files and this
    project's training checkpoints ``{"model": ..., "meta": ...}``. Wrapper prefixes (``module.``,
    ``_orig_mod.``) are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, expected a checkpoint")
    if _is_safetensors(path):
        try:
            state = load_file(path, device=str(map_location))
            with safe_open(path, framework="pt") as f:
                raw = f.metadata() or {}
        except SafetensorError as e:
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({e})") from None
        meta = {k.removeprefix("ecanet."): json.loads(v) for k, v in raw.items() if k.startswith("ecanet.")}
        return _strip(state), meta
    obj = _torch_load(path, map_location)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state, meta = obj["state_dict"], {"arch": obj["arch"]} if isinstance(obj.get("arch"), str) else {}
    elif is_training_checkpoint(obj):
        state, meta = obj["model"], dict(obj.get("meta") or {})
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        state, meta = obj, {}
    else:
        found = f"a dict with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path}: no weights found: expected a state dict or a dict with 'state_dict' or 'model', found {found}"
        )
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state dict entry {bad[0]!r} is not a tensor")
    return _strip(state), meta


def infer_model_name(state: Mapping[str, Tensor], arch_hint: str | None = None) -> str:
    """Name the zoo model a state dict belongs to, from its keys and shapes.

    ECA weights are the only 3-D tensors of these networks: (1, 1, k) for ECA, (C, 1, k) for ECA-NS.
    Circular ECA has the same weights as ECA and is recognised only through ``arch_hint`` (e.g. "ceca_...").
    """
    keys = set(state)
    if "layer1.0.conv1.weight" in keys and "fc.weight" in keys:
        blocks = []
        stage = 1
        while f"layer{stage}.0.conv1.weight" in keys:
            blocks.append(1 + max(int(m.group(1)) for k in keys if (m := re.match(rf"layer{stage}\.(\d+)\.", k))))
            stage += 1
        kind = "bottleneck" if "layer1.0.conv3.weight" in keys else "basic"
        arch = find_arch("resnet", kind, blocks) or "?"
    elif "features.0.0.weight" in keys and "classifier.1.weight" in keys:
        arch = "mobilenet_v2"
    else:
        arch = "?"
    if arch not in ARCHS:
        raise CheckpointError(f"weights of an architecture outside the zoo (keys such as {sorted(keys)[:3]})")
    eca = [v for v in state.values() if v.ndim == 3]
    if eca:
        attn = "eca_ns" if eca[0].shape[0] > 1 else "eca"
        if attn == "eca" and arch_hint and arch_hint.startswith("ceca"):
            attn = "ceca"
    elif any(k.endswith("fc1.weight") for k in keys):
        attn = "se"
    elif any("spatial_conv" in k for k in keys):
        attn = "cbam"
    else:
        return arch
    return f"{attn}_{arch}"


def _num_classes(state: Mapping[str, Tensor]) -> int | None:
    """The class count of the file's classifier, if it has one."""
    head = state.get("fc.weight", state.get("classifier.1.weight"))
    return None if head is None else int(head.shape[0])


def _kernel_sizes(name: str, state: Mapping[str, Tensor]) -> list[int] | None:
    """ECA kernel size per stage, read off the weight shapes of the first block of every stage (None when
    the model has no ECA or the file no ECA weights where the model has them)."""
    if parse_model_name(name)[0] not in ECA_ATTENTIONS:
        return None
    with torch.device("meta"):
        names = stage_eca_modules(create_model(name, eca_k="adaptive"))
    keys = [n + ".conv.weight" for n in names]
    return [int(state[k].shape[-1]) for k in keys] if all(k in state for k in keys) else None


def _check_shapes(model: nn.Module, state: Mapping[str, Tensor], source: str, skip: set[str] = frozenset()) -> None:
    own = model.state_dict()
    common = [k for k in state if k in own]
    if not common:
        raise CheckpointError(
            f"{source}: checkpoint is for another architecture: none of its {len(state)} tensors "
            f"(e.g. {next(iter(state), '-')!r}) match the model's names (e.g. {next(iter(own), '-')!r})"
        )
    for k in common:
        if k not in skip and state[k].shape != own[k].shape:
            raise CheckpointError(
                f"{source}: checkpoint is for another architecture: {k!r} has shape {tuple(state[k].shape)} "
                f"in the file but {tuple(own[k].shape)} in the model"
            )


def _attention_keys(model: nn.Module) -> set[str]:
    prefixes = [n + "." for n, m in model.named_modules() if is_attention(m)]
    return {k for k in model.state_dict() if any(k.startswith(p) for p in prefixes)}


def _head_keys(model: nn.Module) -> set[str]:
    return {k for k in model.state_dict() if k.split(".")[0] in ("fc", "classifier", "head", "heads")}


FRESH_PARTS = ("head", "attention")


def load_state(
    model: nn.Module, state: Mapping[str, Tensor], source: str = "state dict", fresh: Collection[str] = ()
) -> LoadReport:
    """Copy ``state`` into ``model``: every tensor of the model must come from the file, with its shape, and
    every tensor of the file must have a place in the model - a trained file is never half-loaded.

    Only the parts named in ``fresh`` may stay as initialised: ``"head"``, the classifier, when the file has
    none or one of another class count (fine-tuning); ``"attention"``, attention modules the file lacks
    (starting from plain weights). Anything else that does not fit raises CheckpointError naming the file
    and a key; nothing is copied then.
    """
    unknown = sorted(set(fresh) - set(FRESH_PARTS))
    if unknown:
        raise ValueError(f"fresh: unknown parts {unknown}; choose from {FRESH_PARTS}")
    state = adapt_state(model, state, source)  # RGB weights into a model of other input channels
    own = model.state_dict()
    head = _head_keys(model) if "head" in fresh else set()
    attention = _attention_keys(model) if "attention" in fresh else set()
    _check_shapes(model, state, source, skip=head)
    fresh_head = {k for k in head if k in state and state[k].shape != own[k].shape}
    usable = {k: v for k, v in state.items() if k in own and k not in fresh_head}
    missing = sorted(set(own) - set(usable))
    unexpected = sorted(k for k in state if k not in own)
    # BatchNorm's step counter is no trained value, and BatchNorm's own loader accepts files without it
    # (FrozenBatchNorm2d, e.g. after --freeze-bn, and older PyTorch files have none).
    not_fresh = [k for k in missing if k not in head and k not in attention and not k.endswith("num_batches_tracked")]
    if not_fresh:
        parts = [
            part
            for part, keys in (("attention", _attention_keys(model)), ("head", _head_keys(model)))
            if any(k in keys for k in not_fresh)
        ]
        raise CheckpointError(
            f"{source}: does not fit the model: {len(not_fresh)} tensors missing from the file, e.g. "
            f"{not_fresh[0]!r}" + (f" (to start them fresh: fresh={tuple(parts)})" if parts else "")
        )
    if unexpected:
        raise CheckpointError(
            f"{source}: does not fit the model: {len(unexpected)} tensors of the file have no place in it, "
            f"e.g. {unexpected[0]!r}"
        )
    model.load_state_dict(usable, strict=False)
    report = LoadReport(
        copied=sorted(usable),
        missing=missing,
        new_attention=[k for k in missing if k in attention],
        new_head=[k for k in missing if k in head],
    )
    if missing:
        log.info("%s: %d tensors copied; left fresh as asked: %s", source, len(usable), ", ".join(missing[:6]))
    return report


def _zoo_model_for(state: Mapping[str, Tensor], meta: dict, source: str, name: str | None, num_classes: int | None):
    """The zoo model a file holds, built to fit it; ``name`` / ``num_classes`` that contradict it are errors."""
    file_classes = meta.get("num_classes") or _num_classes(state)
    if is_external(meta.get("model", "")):  # a torchvision or timm model, rebuilt with its recorded ECA
        if name is not None and name != meta["model"]:
            raise CheckpointError(f"{source}: holds {meta['model']}, not {name} (--model)")
        try:
            return create_external(meta["model"], file_classes or num_classes, meta.get("adapt", ()))
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{source}: cannot rebuild {meta['model']}: {e}") from None
    inferred = None
    if "model" in meta:
        inferred = meta["model"]
    else:
        try:
            inferred = infer_model_name(state, meta.get("arch") or name)
        except CheckpointError as e:
            if name is None:
                raise CheckpointError(f"{source}: {e}; pass model= to load it into your own network") from None
    if name is not None and inferred is not None and name != inferred:
        raise CheckpointError(f"{source}: holds {inferred}, not {name} (--model)")
    if num_classes is not None and file_classes is not None and num_classes != file_classes:
        raise CheckpointError(
            f"{source}: holds a {file_classes}-class model, not {num_classes} classes (--num-classes)"
        )
    name = name or inferred
    eca_k = meta.get("eca_k") or _kernel_sizes(name, state) or "released"
    model = create_model(
        name,
        num_classes=file_classes or num_classes,
        eca_k=eca_k,
        output_stride=meta.get("output_stride", 32),
        in_chans=meta.get("in_chans", 3),
        features_only="features_only" in meta,
        out_indices=meta.get("features_only"),
    )
    return replay(with_file_widths(model, meta, source), meta.get("adapt", ()))


def with_file_widths(model: nn.Module, meta: Mapping, source: str) -> nn.Module:
    """The model with the layer widths a channel-pruned file records (unchanged for other files). The
    classifier keeps the model's class count (fine-tuning a pruned network on other classes)."""
    if "widths" not in meta:
        return model
    head = {k.rsplit(".", 1)[0] for k in _head_keys(model)}
    own = dict(model.named_modules())
    try:
        widths = {n: [w[0], own[n].out_features] if n in head else w for n, w in meta["widths"].items()}
        return apply_widths(model, widths)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{source}: its recorded layer widths do not fit {model.config['model']}: {e}") from None


def load_checkpoint(
    path: PathLike,
    model: nn.Module | str | None = None,
    map_location: str | torch.device = "cpu",
    num_classes: int | None = None,
    fresh: Collection[str] = (),
) -> nn.Module:
    """Load weights from ``path`` and return the model; a file is loaded whole or not at all.

    Without ``model``, or with a zoo name, the zoo model is built to fit the file: its metadata (this
    project's files, including the layer widths of a channel-pruned network and the ECA put into a
    torchvision/timm model by ``replace_se``/``attach_eca``), or its keys and weight shapes (the authors'
    ``*.pth.tar``, torchvision state dicts) give the name, the class count and the ECA kernel size of every
    stage. A given ``nn.Module`` without ECA is first adapted as the file records. A name or ``num_classes`` that
    contradicts the file is an error naming both. With an ``nn.Module``, the file must fit it exactly, except
    the parts named in ``fresh`` (see ``load_state``).
    """
    state, meta = read_weights(path, map_location)
    source = str(path)
    if model is None or isinstance(model, str):
        model = _zoo_model_for(state, meta, source, model, num_classes)
        model.config |= {k: meta[k] for k in ("classes", "image_size") if k in meta}  # what the run recorded
    elif meta.get("adapt") and not (getattr(model, "config", None) or {}).get("adapt"):
        replay(model, meta["adapt"])  # the network the file was adapted from: adapt it the same way first
    load_state(model, state, source, fresh)
    return model.to(map_location)


def init_from_torchvision(model: nn.Module, weights: PathLike | Mapping[str, Tensor]) -> LoadReport:
    """Initialise an attention model from a plain torchvision ResNet/MobileNetV2 state dict (or file).

    Every backbone tensor must be present with its shape and is copied; only attention parameters (and the
    head, if the file has none or another class count) stay freshly initialised. The report names them.
    """
    state, source = (
        (read_weights(weights)[0], str(weights))
        if isinstance(weights, (str, os.PathLike))
        else (_strip(weights), "state dict")
    )
    return load_state(model, state, source, fresh=FRESH_PARTS)


def save_weights(model: nn.Module, path: PathLike) -> Path:
    """Write the model's state dict as safetensors, with model name, num_classes and ECA kernel sizes in
    the metadata so that ``load_checkpoint(path)`` rebuilds it alone. The write is atomic."""
    path = Path(path)
    config = dict(getattr(model, "config", {}) or {})
    meta = {"format": "pt"} | {f"ecanet.{k}": json.dumps(v) for k, v in config.items()}
    state = {k: v.detach().contiguous().cpu() for k, v in _strip(model.state_dict()).items()}
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
