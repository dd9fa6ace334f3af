"""Does ECA help? The statistics of a comparison: several models, several seeds each, per model the mean
and sd over seeds, and the differences against the first model with paired confidence intervals over seeds;
its table and figure. ``ecanet.classification.compare`` trains the runs."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .table import render_table


@dataclass(frozen=True)
class Arm:
    """One model of a comparison: a label, a zoo model, its ECA kernel sizes and its widths file (a searched
    width configuration; None: the model's own)."""

    label: str
    model: str
    eca_k: str | list[int] = "released"
    widths: str | None = None


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Mean of the paired differences a - b over seeds, its standard deviation and the two-sided
    ``level`` confidence interval from Student's t with n - 1 degrees of freedom (None for one seed)."""
    from scipy import stats

    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, sd = mean_sd(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "sd": sd, "low": None, "high": None, "n": len(diffs)}
    half = stats.t.ppf(0.5 + level / 2, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "n": len(diffs)}


def summarize(
    arms: Sequence[Arm], runs: dict[str, list[dict]], final_key: str = "final_top1", best_key: str = "best_top1"
) -> dict:
    """``{"rows", "pairs", "runs"}`` from every arm's run summaries (``final_key``, ``best_key``, ``seed``,
    ``params``, ``macs``, ``img_per_s``): per arm mean and sd over seeds, and per arm after the first the
    paired difference against the first, run for run in seed order. The two metrics are top-1 for
    classification; a segmentation comparison passes Dice and mIoU."""
    rows = []
    for arm in arms:
        done = runs[arm.label]
        final, best = mean_sd([r[final_key] for r in done]), mean_sd([r[best_key] for r in done])
        rows.append(
            {
                "label": arm.label,
                "model": arm.model,
                "eca_k": arm.eca_k,
                "seeds": [r["seed"] for r in done],
                "finals": [r[final_key] for r in done],
                "final_mean": final[0],
                "final_sd": final[1],
                "best_mean": best[0],
                "best_sd": best[1],
                "params": done[0]["params"],
                "macs": done[0]["macs"],
                "img_per_s": statistics.fmean(r["img_per_s"] for r in done),
            }
        )
    first = runs[arms[0].label]
    pairs = [
        {
            "label": arm.label,
            "against": arms[0].label,
            "final": paired_interval([r[final_key] for r in runs[arm.label]], [r[final_key] for r in first]),
            "best": paired_interval([r[best_key] for r in runs[arm.label]], [r[best_key] for r in first]),
        }
        for arm in arms[1:]
    ]
    return {"rows": rows, "pairs": pairs, "runs": runs}


def format_comparison(result: dict, metrics: tuple[str, str] = ("final top-1 (%)", "best top-1 (%)")) -> str:
    """The table: per model mean +- sd of the two metrics (top-1 final and best; ``metrics`` names them), cost,
    speed, and the paired difference of the first metric against the first model with its 95 % interval."""
    pairs = {p["label"]: p["final"] for p in result["pairs"]}

    def diff(label: str) -> str:
        p = pairs.get(label)
        if p is None:
            return "-"
        interval = f" [{p['low']:+.2f}, {p['high']:+.2f}]" if p["low"] is not None else ""
        return f"{p['mean']:+.2f}{interval}"

    body = [
        [
            r["label"],
            f"{r['params']:,}",
            f"{r['macs'] / 1e6:.2f}",
            _spread(r["final_mean"], r["final_sd"], len(r["seeds"])),
            _spread(r["best_mean"], r["best_sd"], len(r["seeds"])),
            diff(r["label"]),
            f"{r['img_per_s']:.0f}",
            str(len(r["seeds"])),
        ]
        for r in result["rows"]
    ]
    first = result["rows"][0]["label"]
    header = ["model", "params", "MMACs", *metrics, f"vs {first} (95% CI)", "train img/s"]
    return render_table([*header, "seeds"], body)


def _spread(mean: float, sd: float, n: int) -> str:
    return f"{mean:.2f} +- {sd:.2f}" if n > 1 else f"{mean:.2f}"


def plot_comparison(rows: list[dict], path: Path, ylabel: str = "final top-1 (%)") -> Path:
    """The first metric (final top-1) of every run (dots) and each model's mean +- sd (bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 2, 4))
    for i, r in enumerate(rows):
        ax.errorbar(i, r["final_mean"], r["final_sd"], marker="s", capsize=4, color="C0")
        ax.scatter([i] * len(r["finals"]), r["finals"], color="C1", s=12, zorder=3)
    ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=30, ha="right")
    ax.set(ylabel=ylabel, title=f"{len(rows[0]['seeds'])} seeds per model: runs and mean +- sd")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def with_speed(summary: dict, out: Path, seed: int) -> dict:
    """A run's summary with its seed and median training img/s over epochs (from OUT/metrics.jsonl)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {**summary, "seed": seed, "img_per_s": statistics.median(r["img_per_s"] for r in records)}
