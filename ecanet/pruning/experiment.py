"""``ecanet prune`` end to end: accuracy before, right after pruning, after compensation and after
fine-tuning (on the shared training engine), measured speed, and criteria side by side."""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..classification import build_datasets, evaluate, train
from ..classification.config import TrainConfig
from ..classification.data import collate_skipping
from ..errors import DataError
from ..studies.table import render_table
from ..studies.timing import interleaved
from ..training.checkpoint import atomic_write
from ..training.config import field_names
from ..weights import load_checkpoint, save_weights
from .calibration import as_batches
from .compensate import compensate
from .config import PruneConfig
from .graph import torch_pruning
from .prune import check_target, prune

log = logging.getLogger("ecanet")


def calibration_batches(dataset: Dataset, images: int, batch_size: int, seed: int) -> list:
    """``images`` training images drawn at random (seeded), with the evaluation transform, as batches."""
    if images < 1:
        raise ValueError(f"--calibration-images must be at least 1, got {images}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:images]
    loader = DataLoader(Subset(dataset, order.tolist()), batch_size=batch_size, collate_fn=collate_skipping)
    return as_batches(loader)


def throughput(models: dict[str, nn.Module], size: int, batch_size: int, repeats: int = 5) -> dict[str, float]:
    """Inference images per second of each model, median of interleaved repeats in one process."""
    x = torch.randn(batch_size, 3, size, size)
    for m in models.values():
        m.eval()

    def run(m: nn.Module):
        return lambda: m(x)

    with torch.inference_mode():
        times = interleaved({k: run(m) for k, m in models.items()}, repeats, warmup=1)
    return {k: batch_size / statistics.median(v) for k, v in times.items()}


def _top1(model: nn.Module, val: Dataset, cfg: PruneConfig) -> float:
    return evaluate(model, val, cfg.image_size, cfg.batch_size, cfg.workers, cfg.device)["top1"]


def run_prune(cfg: PruneConfig) -> dict:
    """Prune ``cfg.weights`` with ``cfg.importance`` (and every criterion of ``cfg.compare``) and write
    OUT/pruned.safetensors, report.json and summary.json (per criterion under OUT/<criterion>/ when
    comparing, plus comparison.json and comparison.png). Returns the summary with one row per criterion."""
    if cfg.weights is None:
        raise ValueError("--weights is required: the trained network to prune")
    check_target(cfg.ratio, cfg.speed_up, cfg.scope, cfg.steps)
    torch_pruning()  # a missing extra is said before anything is read
    model = load_checkpoint(cfg.weights, cfg.model, num_classes=cfg.num_classes)
    embedded = cfg.data is None and cfg.train_dir is None
    cfg = replace(cfg, model=model.config["model"], image_size=cfg.image_size or (16 if embedded else 224))
    calibration_set, val_set, where = build_datasets(replace(cfg, augment=False))
    classes, expected = len(calibration_set.classes), model.config["num_classes"]
    if classes != expected:
        raise DataError(f"{where}: {classes} classes, but {cfg.weights} holds a {expected}-class model")
    batches = calibration_batches(calibration_set, cfg.calibration_images, cfg.batch_size, cfg.seed)
    top1 = _top1(model, val_set, cfg)
    criteria = list(dict.fromkeys([cfg.importance, *cfg.compare]))
    out = Path(cfg.output)
    rows = []
    for name in criteria:
        folder = out / name if len(criteria) > 1 else out
        rows.append(_prune_one(model, name, cfg, batches, val_set, folder, top1))
    summary = {"model": cfg.model, "weights": cfg.weights, "data": where, "top1_before": top1, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(asdict(cfg), indent=2)))
    if len(criteria) > 1:
        (out / "comparison.json").write_text(json.dumps(summary, indent=2))
        plot_comparison(summary, out / "comparison.png")
    else:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _prune_one(
    model: nn.Module, importance: str, cfg: PruneConfig, batches: list, val: Dataset, folder: Path, top1: float
) -> dict:
    log.info("pruning %s with %s", cfg.model, importance)
    pruned, report = prune(
        model,
        batches,
        importance,
        ratio=cfg.ratio,
        speed_up=cfg.speed_up,
        scope=cfg.scope,
        steps=cfg.steps,
        round_to=cfg.round_to,
        ignore=cfg.ignore,
        fallback=cfg.fallback,
        activation=cfg.activation,
        seed=cfg.seed,
    )
    row = {
        "importance": importance,
        "params": report.params_after,
        "macs": report.macs_after,
        "params_before": report.params_before,
        "macs_before": report.macs_before,
        "speed_up": report.speed_up,
        "top1_before": top1,
        "top1_pruned": _top1(pruned, val, cfg),
        "top1_compensated": None,
        "top1_finetuned": None,
    }
    if cfg.compensate:
        report.compensation = compensate(pruned, model, batches, report.kept)
        row["top1_compensated"] = _top1(pruned, val, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    weights = save_weights(pruned, folder / "pruned.safetensors")
    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    if cfg.finetune_epochs > 0:
        row["top1_finetuned"] = _finetune(cfg, weights, folder / "finetune", pruned)
    speed = throughput({"before": model, "after": pruned}, cfg.image_size, cfg.batch_size)
    row |= {"img_per_s_before": speed["before"], "img_per_s_after": speed["after"], "weights": str(weights)}
    (folder / "summary.json").write_text(json.dumps(row, indent=2))
    log.info("%s", report.summary())
    return row


def _finetune(cfg: PruneConfig, weights: Path, output: Path, pruned: nn.Module) -> float:
    """Fine-tune the pruned weights with the training engine; the final validation top-1."""
    values = {k: v for k, v in asdict(cfg).items() if k in field_names(TrainConfig)}
    extra = {"pretrained": str(weights), "epochs": cfg.finetune_epochs, "output": str(output), "compare": []}
    tcfg = TrainConfig(**values | extra | {"eca_k": pruned.config.get("eca_k") or "released"})
    return train(tcfg)["final_top1"]


COLUMNS = [
    ("importance", "criterion", "{}"),
    ("params", "params", "{:,}"),
    ("macs", "MMACs", "{:.2f}"),
    ("speed_up", "MACs x", "{:.2f}"),
    ("top1_before", "top-1 before", "{:.2f}"),
    ("top1_pruned", "pruned", "{:.2f}"),
    ("top1_compensated", "compensated", "{:.2f}"),
    ("top1_finetuned", "fine-tuned", "{:.2f}"),
    ("img_per_s_before", "img/s before", "{:.0f}"),
    ("img_per_s_after", "img/s after", "{:.0f}"),
]


def format_rows(rows: list[dict]) -> str:
    def cell(row: dict, key: str, fmt: str) -> str:
        value = row.get(key)
        if value is None:
            return "-"
        return fmt.format(value / 1e6 if key == "macs" else value)

    return render_table([t for _, t, _ in COLUMNS], [[cell(r, k, f) for k, _, f in COLUMNS] for r in rows])


def plot_comparison(summary: dict, path: Path) -> Path:
    """Top-1 against MACs: the unpruned network, and every criterion after each recovery stage (one colour
    per criterion; criteria at the same MACs are spread sideways by a small offset so that none hides another)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = summary["rows"]
    before = rows[0]["macs_before"] / 1e6
    ax.scatter([before], [summary["top1_before"]], marker="*", s=150, color="k", label="unpruned")
    stages = [
        ("top1_pruned", "o", "pruned"),
        ("top1_compensated", "s", "compensated"),
        ("top1_finetuned", "^", "fine-tuned"),
    ]
    step = 0.012 * before
    for i, row in enumerate(rows):
        x = row["macs"] / 1e6 + (i - (len(rows) - 1) / 2) * step
        for key, marker, _ in stages:
            if row[key] is not None:
                ax.scatter(x, row[key], marker=marker, color=f"C{i}")
        ax.plot([], [], color=f"C{i}", linewidth=6, label=row["importance"])
    for _, marker, stage in stages:
        ax.scatter([], [], marker=marker, color="gray", label=stage)
    ax.set_xlabel("MMACs per image (criteria at one value spread sideways)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"{summary['model']}: pruning criteria")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
