"""The paper's kernel-size study (Figure 4) as a comparison: the same backbone with ECA of k = 3, 5, 7, 9
and the adaptive k, with SE and without attention as references, every setting and seed trained by
``ecanet.studies.comparison.compare`` (resumable, paired intervals against the first setting), plus the figure of
accuracy against k."""

from __future__ import annotations

from pathlib import Path

from ..classification.compare import compare
from ..classification.config import TrainConfig
from ..models import ARCHS, parse_model_name
from .comparison import Arm


def settings(arch: str, ks: list[int]) -> list[Arm]:
    """Every setting of the study, as the arms of a comparison."""
    stages = len(ARCHS[arch].released_k)
    arms = [Arm(f"k={k}", f"eca_{arch}", [k] * stages) for k in ks]
    return [*arms, Arm("adaptive", f"eca_{arch}", "adaptive"), Arm("SE", f"se_{arch}"), Arm("none", arch)]


def ablate_k(cfg: TrainConfig, ks: list[int], seeds: list[int]) -> dict:
    """Train every setting for every seed (OUT/<label>/seed<seed>); ``compare``'s result (also
    OUT/comparison.json and .png), with the accuracy against k plotted in OUT/ablate_k.png."""
    attn, arch = parse_model_name(cfg.model)
    if attn is not None:
        raise ValueError(f"--model: give the backbone without attention (e.g. {arch}), not {cfg.model}")
    result = compare(cfg, settings(arch, ks), seeds)
    plot_ablation(result["rows"], Path(cfg.output) / "ablate_k.png")
    return result


def plot_ablation(rows: list[dict], path: Path) -> Path:
    """Accuracy against k (error bars: std over seeds); adaptive, SE and no attention as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fixed = [r for r in rows if r["label"].startswith("k=")]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(
        [int(r["label"][2:]) for r in fixed],
        [r["final_mean"] for r in fixed],
        [r["final_sd"] for r in fixed],
        marker="o",
        capsize=3,
        label="ECA, fixed k",
    )
    for r, style in zip([r for r in rows if not r["label"].startswith("k=")], ["--", ":", "-."]):
        ax.axhline(r["final_mean"], linestyle=style, color="gray" if r["label"] == "none" else None, label=r["label"])
    ax.set(xlabel="kernel size k", ylabel="top-1 (%)", title="ECA kernel size (paper, Figure 4)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
