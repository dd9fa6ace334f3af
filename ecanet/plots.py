"""Figures of a training run."""

from __future__ import annotations

from pathlib import Path


def plot_curves(records: list[dict], path: Path) -> Path:
    """OUT/curves.png: loss and top-1 accuracy per epoch, train and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in records], marker="o", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in records], marker="o", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [r["train_top1"] for r in records], marker="o", label="train")
    ax_acc.plot(epochs, [r["val_top1"] for r in records], marker="o", label="val top-1")
    ax_acc.plot(epochs, [r["val_top5"] for r in records], marker=".", linestyle="--", label="val top-5")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
