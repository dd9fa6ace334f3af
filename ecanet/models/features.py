"""Backbones as feature extractors, in the convention segmentation libraries expect (timm's
``features_only``): the stem's and every stage's output map, with ``feature_info`` saying each one's
channels, reduction (input side / map side) and the module it is read after.

Written here rather than taken from timm's ``FeatureListNet`` because timm is an optional extra and
``create_model(..., features_only=True)`` is part of the base install; the interface is timm's, so timm
and segmentation-models-pytorch take these networks unchanged (``ecanet.register_timm``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class FeatureInfo:
    """The selected levels of a feature extractor: ``channels()``, ``reduction()``, ``module_name()`` (as
    timm's ``FeatureInfo``), and ``info``, one dict per level of the whole network (``num_chs``,
    ``reduction``, ``module``)."""

    def __init__(self, info: list[dict], out_indices: Sequence[int]) -> None:
        self.info = info
        self.out_indices = tuple(out_indices)

    def _rows(self, idx: int | Sequence[int] | None) -> list[dict]:
        picked = self.out_indices if idx is None else [idx] if isinstance(idx, int) else idx
        return [self.info[i] for i in picked]

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> list | object:
        values = [row[key] for row in self._rows(idx)]
        return values[0] if isinstance(idx, int) else values

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> list | dict:
        rows = [row if keys is None else {k: row[k] for k in keys} for row in self._rows(idx)]
        return rows[0] if isinstance(idx, int) else rows

    def channels(self, idx: int | Sequence[int] | None = None) -> list[int] | int:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> list[int] | int:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> list[str] | str:
        return self.get("module", idx)

    def __getitem__(self, i: int) -> dict:
        return self.info[i]

    def __len__(self) -> int:
        return len(self.info)


def check_out_indices(out_indices: Sequence[int], levels: int, name: str) -> tuple[int, ...]:
    """``out_indices`` as non-negative ints (negative ones count from the last level), each a level."""
    picked = tuple(i + levels if i < 0 else i for i in out_indices)
    if not picked or any(not 0 <= i < levels for i in picked) or len(set(picked)) != len(picked):
        raise ValueError(f"out_indices for {name} must be distinct levels in 0..{levels - 1}, got {tuple(out_indices)}")
    return tuple(sorted(picked))


class FeatureNet(nn.Module):
    """The zoo model's layers up to the last selected level, returning the selected maps as a list.

    Module and parameter names stay the model's (``conv1``, ``layer1.0...``, ``features.3...``), so weights
    of the classifier load into it once the head is left out. The model's ``feature_info`` modules are
    top-level children (``layer2``) or items of a top-level Sequential (``features.6``).
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        info = model.feature_info
        self.out_indices = check_out_indices(
            range(len(info)) if out_indices is None else out_indices, len(info), model.config["model"]
        )
        self.feature_info = FeatureInfo(info, self.out_indices)
        self.first_conv = model.first_conv
        self.config = {**model.config, "features_only": list(self.out_indices)}
        wanted = [info[i]["module"] for i in self.out_indices]
        self._steps: list[tuple[str, bool]] = []  # (module path, whether its output is returned)
        for name, child in model.named_children():
            if not wanted:
                break
            inner = [w.split(".", 1)[1] for w in wanted if w.startswith(name + ".")]
            if inner:  # a Sequential whose items are levels: keep it up to the last level needed
                keys = list(child._modules)
                last = max(keys.index(k) for k in inner)
                self.add_module(name, child[: last + 1])
                self._steps += [(f"{name}.{k}", f"{name}.{k}" in wanted) for k in keys[: last + 1]]
            else:
                self.add_module(name, child)
                self._steps.append((name, name in wanted))
            wanted = [w for w in wanted if w != name and not w.startswith(name + ".")]

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for path, returned in self._steps:
            x = self.get_submodule(path)(x)
            if returned:
                outs.append(x)
        return outs
