"""``ecanet report OUT``: a training output folder as one self-contained HTML page (figures inlined):
config, per-epoch metrics, curves, complexity and the channel-attention figure."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

import torch

from .classification import build_datasets
from .config import TrainConfig
from .plots import plot_curves
from .viz import channel_attention, plot_strips
from .weights import load_checkpoint

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "img_per_s", "seconds"]


def _png(path: Path) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        return html.escape(f"{v:.4g}" if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _attention_figure(run: Path, cfg: TrainConfig, tmp: Path) -> str:
    weights = run / "final.safetensors" if (run / "final.safetensors").is_file() else run / "best.safetensors"
    if not weights.is_file():
        return "<p>No exported weights (final.safetensors) yet.</p>"
    model = load_checkpoint(weights)
    val = build_datasets(cfg)[1]
    images = torch.stack([val[i][0] for i in range(min(16, len(val)))])
    try:
        attn = channel_attention(model, images)
    except ValueError:
        return f"<p>{html.escape(cfg.model)} has no attention layers.</p>"
    mean = {name: w.mean(0).numpy() for name, w in attn.items()}
    path = plot_strips(mean, f"mean channel attention over {len(images)} validation images", tmp / "attention.png")
    return _png(path)


def build_report(run_dir: str | Path) -> Path:
    """Write RUN/report.html and return its path."""
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run}: not a training output folder (no config.json)")
    cfg = TrainConfig(**json.loads((run / "config.json").read_text()))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        curves = _png(plot_curves(records, tmp / "curves.png")) if records else "<p>No epoch finished yet.</p>"
        attention = _attention_figure(run, cfg, tmp)
    cost = [[k, summary[k]] for k in ("params", "macs") if k in summary]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ecanet run: {html.escape(cfg.model)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(cfg.model)} — {html.escape(str(run))}</h1>
<h2>Summary</h2>{_table(["key", "value"], [[k, v] for k, v in summary.items() if k != "comparison"])}
<h2>Curves</h2>{curves}
<h2>Metrics per epoch</h2>{_table(METRIC_COLUMNS, [[r.get(c, "") for c in METRIC_COLUMNS] for r in records])}
<h2>Complexity</h2>{_table(["quantity", "value"], cost)}<p>MACs per image at {cfg.image_size}x{cfg.image_size}.</p>
<h2>Channel attention</h2>{attention}
<h2>Config</h2>{_table(["key", "value"], [[k, v] for k, v in json.loads((run / "config.json").read_text()).items()])}
</body></html>"""
    out = run / "report.html"
    out.write_text(page)
    return out
