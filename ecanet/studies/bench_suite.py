"""Many ``ecanet bench`` runs as one table: the zoo suite (every family at its own resolution and batch, each
model against its attention-free twin) and size sweeps (one set of models over batch sizes or image sizes,
with a figure of how attention's relative cost changes with the work per step)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .bench import BenchConfig, run_bench


@dataclass(frozen=True)
class Family:
    """A backbone family: its attention-free twin, native input, batch, and torchvision's model if any."""

    twin: str
    image_size: int
    batch_size: int
    reference: str | None = None

    def models(self, attentions: Sequence[str]) -> list[str]:
        """The twin first (the ratios' base), then the attention variants, then torchvision's model."""
        return [self.twin, *(f"{a}_{self.twin}" for a in attentions)] + ([self.reference] if self.reference else [])


SUITES: dict[str, list[Family]] = {
    "zoo": [
        Family("resnet18", 224, 16, "tv:resnet18"),
        Family("resnet50", 224, 16, "tv:resnet50"),
        Family("resnet101", 224, 16, "tv:resnet101"),
        Family("resnet20", 32, 64),
        Family("resnet56", 32, 64),
        Family("mobilenet_v2", 224, 16, "tv:mobilenet_v2"),
    ]
}
SUITE_ATTENTIONS = ("se", "eca")
SWEEP_AXES = ("batch_size", "image_size")


def run_suite(
    cfg: BenchConfig,
    families: Sequence[Family],
    image_size: int | None = None,
    batch_size: int | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """One bench run per family (at its native size unless ``image_size`` / ``batch_size`` say otherwise);
    rows carry ``family``, ``image_size`` and ``batch_size``, ratios against the family's twin."""
    rows = []
    for family in families:
        run = replace(
            cfg,
            models=family.models(SUITE_ATTENTIONS),
            image_size=image_size or family.image_size,
            batch_size=batch_size or family.batch_size,
        )
        log(f"family {family.twin}: {run.image_size}x{run.image_size}, batch {run.batch_size}")
        for row in run_bench(run, log=log):
            rows.append({"family": family.twin, "image_size": run.image_size, "batch_size": run.batch_size, **row})
    return rows


def run_sweep(cfg: BenchConfig, axis: str, values: Sequence[int], log: Callable[[str], None] = print) -> list[dict]:
    """One bench run of ``cfg.models`` per value of ``axis`` ("batch_size" or "image_size")."""
    if axis not in SWEEP_AXES:
        raise ValueError(f"sweep axis must be one of {SWEEP_AXES}, got {axis!r}")
    rows = []
    for value in values:
        run = replace(cfg, **{axis: value})
        log(f"{axis} {value}")
        for row in run_bench(run, log=log):
            rows.append({"image_size": run.image_size, "batch_size": run.batch_size, **row})
    return rows


def plot_sweep(rows: list[dict], axis: str, path: str | Path) -> Path:
    """Each model's inference and training ratio to the first model against ``axis`` (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    base, others = models[0], models[1:]
    fig, ax = plt.subplots(figsize=(7, 4))
    for model in others:
        mine = [r for r in rows if r["model"] == model]
        for key, style in (("infer_ratio", "-o"), ("train_ratio", "--s")):
            points = [(r[axis], r[key]) for r in mine if r[key] is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, label=f"{model}, {key.split('_')[0]}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log", base=2)
    values = sorted({r[axis] for r in rows})
    ax.set_xticks(values, [str(v) for v in values])
    ax.set_xlabel(axis.replace("_", " "))
    ax.set_ylabel(f"throughput ratio to {base}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
