"""``ecanet report OUT``: a training output folder (classification, detection or segmentation) as one self-contained HTML
page (figures inlined): summary, curves, per-epoch metrics, complexity, the channel-attention figure
(classification) and the config."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

import torch

from ..classification import build_datasets
from ..classification.config import TrainConfig
from ..detection.config import DetectConfig
from ..segmentation.config import SegmentConfig
from ..training.config import check_fields, merge, read_json
from ..weights import load_checkpoint
from .plots import plot_curves, plot_detection_curves, plot_segmentation_curves
from .viz import channel_attention, plot_strips


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


def _records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON lines ({e})") from None


def _columns(records: list[dict]) -> list[str]:
    """Every record key, in order of first appearance (classification and detection runs differ)."""
    return list(dict.fromkeys(k for r in records for k in r))


def _task(values: object) -> tuple[type, object, str | None]:
    """(config class, curves plot, what the backbone serves) of a run from its saved config's keys."""
    if isinstance(values, dict) and "annotations" in values:
        return DetectConfig, plot_detection_curves, "detector"
    if isinstance(values, dict) and "masks_as" in values:
        return SegmentConfig, plot_segmentation_curves, "segmenter"
    return TrainConfig, plot_curves, None


def build_report(run_dir: str | Path) -> Path:
    """Write RUN/report.html for a classification, detection or segmentation output folder; returns its path."""
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run}: not a training output folder (no config.json)")
    values = read_json(run / "config.json", "report")
    config_class, plot, dense = _task(values)
    cfg = merge(config_class, check_fields(values, config_class, f"report: {run / 'config.json'}"))
    records = _records(run)
    summary = read_json(run / "summary.json", "report") if (run / "summary.json").is_file() else {}
    title = f"{cfg.model} ({cfg.backbone})" if dense else cfg.model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        curves = _png(plot(records, tmp / "curves.png")) if records else "<p>No epoch finished yet.</p>"
        attention = (
            f"<p>Channel attention is drawn for classification runs; for a {dense}'s backbone use "
            "<code>ecanet viz attention</code>.</p>"
            if dense
            else _attention_figure(run, cfg, tmp)
        )
    cost = [[k, summary[k]] for k in ("params", "macs") if k in summary]
    columns = _columns(records)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ecanet run: {html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)} — {html.escape(str(run))}</h1>
<h2>Summary</h2>{_table(["key", "value"], [[k, v] for k, v in summary.items() if k != "comparison"])}
<h2>Curves</h2>{curves}
<h2>Metrics per epoch</h2>{_table(columns, [[r.get(c, "") for c in columns] for r in records])}
<h2>Complexity</h2>{_table(["quantity", "value"], cost)}
<h2>Channel attention</h2>{attention}
<h2>Config</h2>{_table(["key", "value"], [[k, v] for k, v in values.items()])}
</body></html>"""
    out = run / "report.html"
    out.write_text(page)
    return out
