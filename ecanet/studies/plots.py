"""Figures of a training run: per-epoch curves, one panel per quantity."""

from __future__ import annotations

from pathlib import Path

Panel = tuple[str, str, list[tuple[str, str]]]  # title, y label, (record key, legend label) per line

CLASSIFICATION_PANELS: list[Panel] = [
    ("loss", "loss", [("train_loss", "train"), ("val_loss", "val")]),
    ("accuracy", "accuracy (%)", [("train_top1", "train"), ("val_top1", "val top-1"), ("val_top5", "val top-5")]),
]
DETECTION_PANELS: list[Panel] = [
    ("loss", "loss", [("train_loss", "train")]),
    ("COCO AP", "AP (%)", [("bbox_AP", "box AP"), ("bbox_AP50", "box AP50"), ("segm_AP", "mask AP")]),
]

SEGMENTATION_PANELS: list[Panel] = [
    ("loss", "loss", [("train_loss", "train"), ("val_loss", "val")]),
    ("segmentation", "score (%)", [("val_mIoU", "mIoU"), ("val_mDice", "mDice"), ("val_pixel_acc", "pixel acc")]),
]


def plot_panels(records: list[dict], path: Path, panels: list[Panel]) -> Path:
    """One panel per quantity against the epoch; lines whose key no record has are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (title, ylabel, lines) in zip(axes[0], panels):
        for key, label in lines:
            if any(key in r for r in records):
                ax.plot(epochs, [r.get(key, float("nan")) for r in records], marker="o", label=label)
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(records: list[dict], path: Path) -> Path:
    """OUT/curves.png of a classification run: loss and top-1/top-5 accuracy, train and validation."""
    return plot_panels(records, path, CLASSIFICATION_PANELS)


def plot_detection_curves(records: list[dict], path: Path) -> Path:
    """OUT/curves.png of a detection run: training loss and COCO AP of boxes (and masks)."""
    return plot_panels(records, path, DETECTION_PANELS)


def plot_segmentation_curves(records: list[dict], path: Path) -> Path:
    """OUT/curves.png of a segmentation run: losses, and mIoU, mDice and pixel accuracy."""
    return plot_panels(records, path, SEGMENTATION_PANELS)
