"""``prune``: a smaller network from a trained one, on Torch-Pruning's dependency graph, ranked by a named
criterion, to a channel ratio or a MACs speed-up, optionally compensated without retraining."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

from torch import Tensor, nn

from ..complexity import complexity
from ..models.widths import layer_widths, refresh_widths
from ..studies.table import render_table
from .calibration import as_batches, input_size
from .compensate import compensate as compensate_layers
from .graph import custom_pruners, torch_pruning, traceable
from .importance import Criterion, create_criterion

SCOPES = ("uniform", "global")
MAX_RATIO = 0.95  # no group loses more than this fraction of its channels


@dataclass
class PruneReport:
    """What pruning did: the criterion and target, per layer the channels before and after and the criterion
    that ranked its output channels, totals of parameters and MACs (per image at ``input_size``), and the
    compensation's reconstruction errors. ``kept`` maps every changed layer to the original indices of the
    input (``"in"``) and output (``"out"``) channels it kept."""

    importance: str
    scope: str
    steps: int
    ratio: float | None
    target_speed_up: float | None
    input_size: tuple[int, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    layers: list[dict] = field(default_factory=list)
    compensation: list[dict] = field(default_factory=list)
    kept: dict[str, dict[str, list[int]]] = field(default_factory=dict, repr=False)

    @property
    def speed_up(self) -> float:
        """MACs before / MACs after."""
        return self.macs_before / max(self.macs_after, 1)

    def to_dict(self) -> dict:
        """Everything but the kept indices, as plain JSON-able values."""
        d = asdict(self)
        d.pop("kept")
        return d | {"speed_up": self.speed_up}

    def format(self) -> str:
        body = [
            [
                r["name"],
                r["type"],
                f"{r['before'][0]} -> {r['after'][0]}",
                f"{r['before'][1]} -> {r['after'][1]}",
                r["ranked_by"] or "-",
            ]
            for r in self.layers
        ]
        return f"{render_table(['layer', 'type', 'in', 'out', 'ranked by'], body)}\n{self.summary()}"

    def summary(self) -> str:
        """One line: criterion, target, parameters and MACs before and after."""
        target = f"speed-up {self.target_speed_up:g}" if self.target_speed_up else f"ratio {self.ratio:g}"
        return (
            f"{self.importance}, {self.scope}, {self.steps} step(s), {target}: "
            f"params {self.params_before:,} -> {self.params_after:,}, "
            f"MACs {self.macs_before:,} -> {self.macs_after:,} ({self.speed_up:.2f}x fewer)"
        )


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy that keeps the gradients (the Taylor criterion reads them)."""
    twin = copy.deepcopy(model)
    for p, q in zip(model.parameters(), twin.parameters()):
        if p.grad is not None:
            q.grad = p.grad.detach().clone()
    return twin


def _check_prunable(model: nn.Module, ignore: tuple[str, ...]) -> list[str]:
    """The names of the layers that must keep their channels: the classifier and ``ignore``. Refuses, in
    one line, what cannot be pruned here."""
    modules = dict(model.named_modules())
    for name, m in modules.items():
        if isinstance(m, nn.Conv2d) and m.groups not in (1, m.in_channels):
            raise ValueError(f"cannot prune {name}: a grouped convolution ({m.groups} groups) is not supported")
    linears = [n for n in layer_widths(model) if isinstance(modules[n], nn.Linear)]  # not inside attention
    if not linears:
        raise ValueError("cannot prune: no classifier (nn.Linear) found whose outputs must be kept")
    unknown = [n for n in ignore if n not in modules]
    if unknown:
        raise ValueError(f"ignore: the model has no layer {unknown[0]!r}")
    return [linears[-1], *ignore]


def _step(
    model: nn.Module,
    criterion: Criterion,
    ratio: float,
    scope: str,
    example: Tensor,
    keep: list[str],
    round_to: int | None,
) -> tuple[nn.Module, dict[str, dict[str, set[int]]], dict[str, str]]:
    """Prune a copy of ``model`` once: (the copy, per layer the dropped input/output indices, per layer the
    criterion that ranked its output channels)."""
    tp = torch_pruning()
    work = _copy(model)
    was_training = work.training
    criterion.bind(work)
    names = {m: n for n, m in work.named_modules()}
    modules = dict(work.named_modules())
    dropped: dict[str, dict[str, set[int]]] = {}
    ranked_out: dict[str, str] = {}
    with traceable(work):
        try:
            pruner = tp.pruner.BasePruner(
                work,
                example,
                criterion,
                global_pruning=scope == "global",
                pruning_ratio=ratio,
                max_pruning_ratio=MAX_RATIO,
                round_to=round_to,
                ignored_layers=[modules[n] for n in keep],
                customized_pruners=custom_pruners(),
            )
        except (RuntimeError, AssertionError, KeyError) as e:
            raise ValueError(
                f"cannot prune this model: its graph could not be traced ({type(e).__name__}: {e})"
            ) from None
        for group in pruner.step(interactive=True):
            root = criterion.root_name(group)
            for item in group:
                name, handler = names.get(item.dep.target.module), item.dep.handler
                if name is None:  # an operation of the graph (addition, concatenation), not a layer
                    continue
                for side, applies in (
                    ("out", pruner.DG.is_out_channel_pruning_fn),
                    ("in", pruner.DG.is_in_channel_pruning_fn),
                ):
                    if applies(handler):
                        dropped.setdefault(name, {}).setdefault(side, set()).update(item.idxs)
                        if side == "out":
                            ranked_out[name] = criterion.ranked_by.get(root, criterion.name)
            group.prune()
    work.train(was_training)
    return work, dropped, ranked_out


def _macs(model: nn.Module, size: tuple[int, ...]) -> int:
    return complexity(model, size)["macs"]


def check_target(ratio: float | None, speed_up: float | None, scope: str, steps: int) -> None:
    """One line for a target that cannot be meant (before anything is measured or written)."""
    if (ratio is None) == (speed_up is None):
        raise ValueError("give exactly one of ratio (--ratio) and speed_up (--speed-up)")
    if ratio is not None and not 0 <= ratio < 1:
        raise ValueError(f"ratio (--ratio) must be in [0, 1), got {ratio}")
    if speed_up is not None and speed_up < 1:
        raise ValueError(f"speed_up (--speed-up) must be at least 1, got {speed_up}")
    if scope not in SCOPES:
        raise ValueError(f"scope (--scope) must be one of {SCOPES}, got {scope!r}")
    if steps < 1:
        raise ValueError(f"steps (--steps) must be at least 1, got {steps}")


def prune(
    model: nn.Module,
    calibration: Tensor | list | object,
    importance: str | Criterion = "eca",
    *,
    ratio: float | None = None,
    speed_up: float | None = None,
    scope: str = "uniform",
    steps: int = 1,
    round_to: int | None = None,
    ignore: tuple[str, ...] | list[str] = (),
    compensate: bool = False,
    fallback: str = "l1",
    activation: bool = False,
    seed: int = 0,
) -> tuple[nn.Module, PruneReport]:
    """Remove channels from a copy of ``model`` (which stays as it is) and return (pruned model, report).

    Args:
        calibration: images (a tensor, or batches / a DataLoader of images or (images, labels)) on which the
            criteria and the compensation measure the network; ``taylor`` needs labels.
        importance: ``eca`` (attention gates), ``l1``, ``bn``, ``taylor``, ``random``, ``similarity``, or a
            ``Criterion``. ``fallback`` ranks the groups that ``eca`` / ``similarity`` have no measure for;
            ``activation`` makes ``eca`` score gate x mean |activation|.
        ratio: fraction of the channels of every group to remove, in [0, 1) (uniform scope; in global scope
            the fraction of all channels). ``speed_up``: instead, the MACs reduction to reach (>= 1); the
            smallest ratio that reaches it is searched.
        scope: ``uniform`` prunes every group (every stage's residual channels, every block's inner
            channels) by the same fraction; ``global`` ranks channels across groups.
        steps: prune in this many steps, measuring the criterion again on the partly pruned network.
        round_to: keep channel counts multiples of this.
        ignore: names of layers whose channels stay; the classifier's outputs always do.
        compensate: refit the layers that lost input channels by least squares (``compensate``).
        seed: for ``random`` and the similarity criterion's sampling.
    """
    check_target(ratio, speed_up, scope, steps)
    criterion = create_criterion(importance, fallback=fallback, activation=activation, seed=seed)
    torch_pruning()
    keep = _check_prunable(model, tuple(ignore))
    batches = as_batches(calibration)
    size = input_size(batches)
    example = batches[0][0][:1].to(next(model.parameters()).device)
    before = complexity(model, size)
    widths = layer_widths(model)
    kept = {n: {"in": list(range(w[0])), "out": list(range(w[1]))} for n, w in widths.items()}
    ranked: dict[str, str] = {}
    current = model
    for s in range(1, steps + 1):
        criterion.prepare(current, batches)
        if ratio is not None:
            local = 1 - (1 - ratio * s / steps) / (1 - ratio * (s - 1) / steps)
            current, dropped, ranked_out = _step(current, criterion, local, scope, example, keep, round_to)
        else:
            current, dropped, ranked_out = _search(
                current, criterion, scope, example, keep, round_to, before["macs"], speed_up ** (s / steps), size
            )
        ranked.update(ranked_out)
        for name, sides in dropped.items():
            for side, idxs in sides.items():
                kept[name][side] = [k for i, k in enumerate(kept[name][side]) if i not in idxs]
    refresh_widths(current)
    after = complexity(current, size)
    now = layer_widths(current)
    changed = [n for n in widths if now.get(n) != widths[n]]
    report = PruneReport(
        importance=criterion.name,
        scope=scope,
        steps=steps,
        ratio=ratio,
        target_speed_up=speed_up,
        input_size=size,
        params_before=before["params"],
        params_after=after["params"],
        macs_before=before["macs"],
        macs_after=after["macs"],
        layers=[
            {
                "name": n,
                "type": type(dict(current.named_modules())[n]).__name__,
                "before": widths[n],
                "after": now[n],
                "ranked_by": ranked.get(n) if now[n][1] != widths[n][1] else None,
            }
            for n in changed
        ],
        kept={n: kept[n] for n in changed},
    )
    if compensate:
        report.compensation = compensate_layers(current, model, batches, report.kept)
    return current, report


def _search(
    model: nn.Module,
    criterion: Criterion,
    scope: str,
    example: Tensor,
    keep: list[str],
    round_to: int | None,
    macs_before: int,
    target: float,
    size: tuple[int, ...],
    iterations: int = 12,
) -> tuple[nn.Module, dict, dict]:
    """The pruning of ``model`` with the smallest ratio whose MACs are at most macs_before / target
    (bisection over the ratio; MACs fall as the ratio grows)."""
    best = _step(model, criterion, MAX_RATIO, scope, example, keep, round_to)
    reachable = macs_before / _macs(best[0], size)
    if reachable < target:
        raise ValueError(
            f"speed_up {target:g} cannot be reached: the largest reachable is {reachable:.2f}x "
            f"(every group at {1 - MAX_RATIO:.0%} of its channels, scope {scope})"
        )
    lo, hi = 0.0, MAX_RATIO
    for _ in range(iterations):
        mid = (lo + hi) / 2
        trial = _step(model, criterion, mid, scope, example, keep, round_to)
        if macs_before / _macs(trial[0], size) >= target:
            hi, best = mid, trial
        else:
            lo = mid
    return best
