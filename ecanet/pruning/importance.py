"""Channel-importance criteria: which channels of a coupled group to remove first (lowest score first).

Each criterion scores a Torch-Pruning group (all layers that lose the same channels together) and records
which criterion ranked it (``ranked_by``: group root layer -> criterion name). Scores are divided by their
mean within the group, so that ``scope="global"`` compares groups ranked by different criteria on the same
scale. ``l1``, ``bn`` and ``taylor`` are Torch-Pruning's own; ``eca``, ``similarity`` and ``random`` are
this project's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .calibration import Batch, accumulate_gradients, feature_samples, gate_statistics
from .graph import ATTENTION_TYPES, torch_pruning


def _normalise(scores: Tensor) -> Tensor:
    return scores / scores.mean().clamp_min(1e-12)


class Criterion:
    """What every criterion does besides scoring: measure on calibration images, know the model's layer
    names, record which criterion ranked which group."""

    name = ""
    needs_labels = False

    def prepare(self, model: nn.Module, batches: list[Batch]) -> None:
        """Measure what the criterion needs on ``model`` (called before every pruning step)."""

    def bind(self, model: nn.Module) -> None:
        """Score groups of ``model`` (a copy of the prepared one, or the prepared one itself)."""
        self.names = {m: n for n, m in model.named_modules()}
        self.ranked_by: dict[str, str] = {}

    def root_name(self, group) -> str:
        return self.names.get(group[0].dep.target.module, "?")

    def record(self, group, name: str) -> None:
        self.ranked_by[self.root_name(group)] = name


def _library_criterion(name: str, base: Callable[[], type], **kwargs) -> type:
    """A criterion that Torch-Pruning implements, with this project's bookkeeping."""
    tp_class = base()

    class LibraryCriterion(Criterion, tp_class):
        def __init__(self) -> None:
            tp_class.__init__(self, normalizer="mean", **kwargs)

        def __call__(self, group) -> Tensor | None:
            self.record(group, name)
            return tp_class.__call__(self, group)

    LibraryCriterion.name = name
    LibraryCriterion.__name__ = f"{name.upper()}Importance"
    return LibraryCriterion


def l1_importance() -> Criterion:
    """Sum of |weights| of every layer in the group, per channel (Li et al., 2017)."""
    return _library_criterion("l1", lambda: torch_pruning().importance.GroupMagnitudeImportance, p=1)()


def bn_importance() -> Criterion:
    """|BatchNorm scale| of the group's BatchNorm layers (network slimming, Liu et al., 2017)."""
    return _library_criterion("bn", lambda: torch_pruning().importance.BNScaleImportance)()


def taylor_importance() -> Criterion:
    """|weight x gradient| of the loss on labelled calibration images (Molchanov et al., 2019)."""

    class Taylor(_library_criterion("taylor", lambda: torch_pruning().importance.GroupTaylorImportance)):
        needs_labels = True

        def prepare(self, model: nn.Module, batches: list[Batch]) -> None:
            accumulate_gradients(model, batches)

    return Taylor()


class RandomImportance(Criterion):
    """Uniform random scores from a seeded generator: the control every comparison needs. (Torch-Pruning's
    own draws from the global generator, which would make runs depend on what ran before.)"""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def bind(self, model: nn.Module) -> None:
        super().bind(model)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, group) -> Tensor:
        self.record(group, self.name)
        return torch.rand(len(group[0].root_idxs), generator=self.generator)


class _PerChannel(Criterion):
    """Scores from per-channel statistics measured on calibration images, gathered over the layers of the
    group that have them (mean), with a fallback criterion for groups that have none."""

    def __init__(self, fallback: str = "l1") -> None:
        if fallback in ("eca", "similarity"):
            raise ValueError(f"fallback must be a weight-based criterion, got {fallback!r}")
        self.fallback = create_criterion(fallback)

    def bind(self, model: nn.Module) -> None:
        super().bind(model)
        self.fallback.bind(model)
        self.fallback.ranked_by = self.ranked_by

    def prepare(self, model: nn.Module, batches: list[Batch]) -> None:
        self.fallback.prepare(model, batches)

    def channel_scores(self, name: str, module: nn.Module, dep) -> Tensor | None:
        """Scores of all channels of ``module`` for this dependency, or None if it has none."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, group) -> Tensor | None:
        n = len(group[0].root_idxs)
        total, count = torch.zeros(n), torch.zeros(n)
        for item in group:
            dep, idxs = item.dep, item.idxs
            module = dep.target.module
            scores = self.channel_scores(self.names.get(module, ""), module, dep)
            if scores is None or any(r is None for r in item.root_idxs):
                continue
            roots = torch.tensor(item.root_idxs)
            total.index_add_(0, roots, scores[idxs].float().cpu())
            count.index_add_(0, roots, torch.ones(len(roots)))
        if not count.any():
            return self.fallback(group)
        self.record(group, self.name)
        return _normalise(total / count.clamp_min(1))


class ECAImportance(_PerChannel):
    """The mean gate of the attention module that scales each channel, over calibration images (the
    channel importance of uniform channel pruning, Chang et al., who took it from squeeze-and-excitation;
    ECA, SE and CBAM gates alike). ``activation=True`` scores gate x mean |activation| instead, the channel's
    mean output magnitude. Groups no gate scales (a block's inner convolutions) are ranked by ``fallback``.
    """

    name = "eca"

    def __init__(self, fallback: str = "l1", activation: bool = False) -> None:
        super().__init__(fallback)
        self.activation = activation

    def prepare(self, model: nn.Module, batches: list[Batch]) -> None:
        if not any(isinstance(m, ATTENTION_TYPES) for m in model.modules()):
            raise ValueError(
                "importance 'eca' needs a model with channel attention, and this one has none; "
                "use l1, bn, taylor, random or similarity"
            )
        super().prepare(model, batches)
        stats = gate_statistics(model, batches)
        self.gates = stats.gated_activation if self.activation else stats.gate

    def channel_scores(self, name: str, module: nn.Module, dep) -> Tensor | None:
        return self.gates.get(name) if isinstance(module, ATTENTION_TYPES) else None


class SimilarityImportance(_PerChannel):
    """Redundancy: channels whose feature maps on calibration images are near-duplicates (|correlation|
    close to 1) form a cluster, and one survives per cluster.

    Channels are visited from the strongest (largest standard deviation of the feature map) to the
    weakest; each scores 1 - its largest |correlation| with any stronger channel. The strongest channel of
    a cluster keeps a high score, its near-copies score about 0 and go first; a constant channel scores 0.
    Feature maps are those of the group's convolutions (before BatchNorm, which is affine per channel and
    does not change a correlation).
    """

    name = "similarity"

    def __init__(self, fallback: str = "l1", samples: int = 1024, seed: int = 0) -> None:
        super().__init__(fallback)
        self.samples, self.seed = samples, seed

    def prepare(self, model: nn.Module, batches: list[Batch]) -> None:
        super().prepare(model, batches)
        self.features = feature_samples(model, batches, self.samples, self.seed)
        self._scores: dict[str, Tensor] = {}

    def channel_scores(self, name: str, module: nn.Module, dep) -> Tensor | None:
        tp = torch_pruning()
        if name not in self.features or dep.handler != tp.prune_conv_out_channels:
            return None
        if name not in self._scores:
            self._scores[name] = redundancy_scores(self.features[name])
        return self._scores[name]


def redundancy_scores(features: Tensor) -> Tensor:
    """1 - max |correlation| with a stronger channel, for features of shape (C, samples)."""
    x = features.double()
    x = x - x.mean(1, keepdim=True)
    std = x.norm(dim=1)
    unit = x / std.clamp_min(1e-12)[:, None]
    order = torch.argsort(std, descending=True)
    corr = (unit[order] @ unit[order].T).abs().tril(-1)  # row i: |correlation| with the stronger channels
    scores_sorted = 1 - corr.max(1).values
    scores = torch.empty_like(scores_sorted)
    scores[order] = scores_sorted
    scores[std <= 1e-12 * std.max().clamp_min(1e-30)] = 0.0
    return scores.float()


CRITERIA: dict[str, Callable[..., Criterion]] = {
    "eca": ECAImportance,
    "l1": l1_importance,
    "bn": bn_importance,
    "taylor": taylor_importance,
    "random": RandomImportance,
    "similarity": SimilarityImportance,
}


def create_criterion(name: str | Criterion, fallback: str = "l1", activation: bool = False, seed: int = 0) -> Criterion:
    """A criterion by name (``CRITERIA``), or the given one; ``fallback`` and ``activation`` apply to ``eca``
    (``fallback`` also to ``similarity``), ``seed`` to ``random`` and ``similarity``."""
    if isinstance(name, Criterion):
        return name
    if name not in CRITERIA:
        raise ValueError(f"unknown importance {name!r}; choose one of {', '.join(CRITERIA)}")
    if name == "eca":
        return ECAImportance(fallback, activation)
    if name == "similarity":
        return SimilarityImportance(fallback, seed=seed)
    if name == "random":
        return RandomImportance(seed)
    return CRITERIA[name]()
