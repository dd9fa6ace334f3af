"""The paper's kernel-size study (Figure 4) as one command: the same backbone with ECA of k = 3, 5, 7, 9
and the adaptive k, with SE and without attention as references, each trained with one budget and seed set
by the training engine."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

from .classification import train
from .config import TrainConfig
from .models import ARCHS, parse_model_name
from .table import render_table


def settings(arch: str, ks: list[int]) -> list[tuple[str, str, str | list[int]]]:
    """(label, zoo model, eca_k) for every setting of the study."""
    stages = len(ARCHS[arch].released_k)
    rows = [(f"k={k}", f"eca_{arch}", [k] * stages) for k in ks]
    return rows + [
        ("adaptive", f"eca_{arch}", "adaptive"),
        ("SE", f"se_{arch}", "released"),
        ("none", arch, "released"),
    ]


def ablate_k(cfg: TrainConfig, ks: list[int], seeds: list[int]) -> list[dict]:
    """Train every setting for every seed (outputs under OUT/<label>/seed<seed>); mean and std of the final
    top-1 per setting, also written to OUT/ablate_k.json and plotted in OUT/ablate_k.png."""
    attn, arch = parse_model_name(cfg.model)
    if attn is not None:
        raise ValueError(f"--model: give the backbone without attention (e.g. {arch}), not {cfg.model}")
    out = Path(cfg.output)
    rows = []
    for label, model, eca_k in settings(arch, ks):
        accs = []
        for seed in seeds:
            run = replace(cfg, model=model, eca_k=eca_k, seed=seed, compare=[], output=str(out / label / f"seed{seed}"))
            accs.append(train(run)["final_top1"])
        rows.append(
            {
                "setting": label,
                "model": model,
                "eca_k": eca_k,
                "seeds": seeds,
                "top1": accs,
                "mean": statistics.fmean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            }
        )
    (out / "ablate_k.json").write_text(json.dumps(rows, indent=2))
    plot_ablation(rows, out / "ablate_k.png")
    return rows


def format_ablation(rows: list[dict]) -> str:
    body = [[r["setting"], r["model"], f"{r['mean']:.2f} +- {r['std']:.2f}", str(len(r["top1"]))] for r in rows]
    return render_table(["setting", "model", "top-1 (%)", "seeds"], body)


def plot_ablation(rows: list[dict], path: Path) -> Path:
    """Accuracy against k (error bars: std over seeds); adaptive, SE and no attention as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fixed = [r for r in rows if r["setting"].startswith("k=")]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(
        [int(r["setting"][2:]) for r in fixed],
        [r["mean"] for r in fixed],
        [r["std"] for r in fixed],
        marker="o",
        capsize=3,
        label="ECA, fixed k",
    )
    for r, style in zip([r for r in rows if not r["setting"].startswith("k=")], ["--", ":", "-."]):
        ax.axhline(r["mean"], linestyle=style, color="gray" if r["setting"] == "none" else None, label=r["setting"])
    ax.set(xlabel="kernel size k", ylabel="top-1 (%)", title="ECA kernel size (paper, Figure 4)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
