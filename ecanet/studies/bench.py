"""``ecanet bench``: throughput and memory of models measured side by side in one run (the analog of the
efficiency columns of the paper's Table 2).

Timed repeats of all models are interleaved after a warm-up, inference first, then training, so a noisy
shared machine slows every model alike; the order rotates every repeat (A B C, B C A, C A B, ...) so that no
model always runs right after the same other one. Throughputs are medians with min and max; a ratio is the
median over repeats of the model's throughput over the first model's in the same repeat (paired, so slow
spells of the machine cancel). A step shorter than ``repeat_seconds`` runs several times in a row per
timed repeat (the first model's count for every model), so that a millisecond of noise does not decide a
short step. ``control`` adds a second, separately built instance of the first model, timed like the others:
its ratio (1 up to the run's own error) says how far apart two identical models read in this run, which no
other ratio can be read more finely than.
With ``train=False`` (``--inference-only``) the process runs no training step at all, as a deployment
does: a training step leaves the process holding memory that later inference buffers reuse, so fresh
buffers cost less afterwards than in an inference-only process.
Peak memory of a training step is measured in a fresh subprocess per model: peak RSS on CPU (the kernel's
high-water mark, reset just before the step), the CUDA allocator's peak on GPU. On CPU the resident memory a
process starts the step with varies by a few tens of MB from one process to the next (freed memory the C
allocator keeps, more of it after torch.compile), which only adds to the peak: ``memory_repeats`` measures
each model in that many fresh processes and keeps the smallest peak.

Model specs: a zoo name (``eca_resnet50``; every zoo model runs the fused tail, the attention-free twin
``resnet50`` too, so a ratio is attention's cost alone), ``NAME:plain`` (the plain formulation,
``fused=False``), ``tv:NAME`` / ``timm:NAME`` (torchvision's or timm's model, e.g. ``tv:resnet50``: what
users have today), any of these with ``+replace_se`` or ``+attach_eca`` (ECA swapped for SE, or attached:
``tv:efficientnet_b0+replace_se``), ``timm:eca_resnet50`` (timm's ResNet-50 with its ECA module, when timm
is installed), ``ort:NAME`` (the zoo
model exported to ONNX and run in ONNX Runtime, inference only; the "export" extra), or a weights file
(e.g. a pruned network's ``pruned.safetensors``: the network it holds, with its widths).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..adapt import create_external, is_external, replay
from ..complexity import complexity
from ..errors import require
from ..models import create_model
from .table import render_table
from .timing import calls_per_repeat, interleaved

DEFAULT_MODELS = ["resnet50", "se_resnet50", "cbam_resnet50", "eca_resnet50", "tv:resnet50"]
CONTROL = "{} (control)"  # the control's row: the first model again, its ratio the run's own resolution
REFERENCE_MODELS = ["eca_resnet50:plain", "timm:eca_resnet50"]


@dataclass
class BenchConfig:
    models: list[str]
    batch_size: int = 16
    image_size: int = 224
    device: str = "cpu"
    dtype: str = "float32"  # float32 | bfloat16 | float16 (autocast)
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None
    repeats: int = 5
    warmup: int = 2
    repeat_seconds: float = 0.5  # short steps: one timed repeat runs the step several times, about this long
    memory: bool = True
    memory_repeats: int = 1  # fresh subprocesses per model; the smallest peak is reported
    train: bool = True  # False: time inference only, no training step in the process
    control: bool = False  # a second instance of the first model, timed like the others (its row: CONTROL)


ADAPTATIONS = ("replace_se", "attach_eca")


def build(spec: str, num_classes: int = 1000) -> nn.Module:
    """A model from a bench spec (see the module docstring)."""
    spec, _, adapt = spec.partition("+")
    if adapt:
        if adapt not in ADAPTATIONS:
            raise ValueError(f"unknown adaptation {adapt!r} in {spec}+{adapt}; use +replace_se or +attach_eca")
        return replay(build(spec, num_classes), [{"op": adapt}])
    if spec == "timm:eca_resnet50":
        timm_resnet = require("timm.models.resnet", "timm")
        return timm_resnet.ResNet(
            timm_resnet.Bottleneck, [3, 4, 6, 3], num_classes=num_classes, block_args={"attn_layer": "eca"}
        )
    if is_external(spec):
        return create_external(spec, num_classes)
    if Path(spec).is_file():
        from ..weights import load_checkpoint

        return load_checkpoint(spec)
    if spec.startswith("ort:"):
        return create_model(spec[4:], num_classes=num_classes)
    name, _, variant = spec.partition(":")
    if variant not in ("", "plain"):
        raise ValueError(f"unknown model variant {spec!r}; use NAME, NAME:plain, tv:NAME, ort:NAME or timm:NAME")
    return create_model(name, num_classes=num_classes, fused=variant != "plain")


def _autocast(cfg: BenchConfig) -> contextlib.AbstractContextManager:
    if cfg.dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(cfg.device).type, dtype=getattr(torch, cfg.dtype))


def _onnx_session(model: nn.Module, cfg: BenchConfig) -> Callable[[torch.Tensor], object]:
    """``model`` exported to ONNX (ecanet export's exporter and check) and loaded in ONNX Runtime on CPU
    with torch's thread count; returns the function that runs one batch."""
    from ..export import export_model

    ort = require("onnxruntime", "export")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_model(model, path, "onnx", image_size=cfg.image_size)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})


class Runner:
    """One model prepared for timed inference and training steps (inference only for ``ort:`` specs:
    ``train`` is None)."""

    def __init__(self, spec: str, cfg: BenchConfig) -> None:
        self.cfg = cfg
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = build(spec).to(cfg.device, memory_format=fmt)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.step_fn = torch.compile(self.model) if cfg.compile else self.model
        g = torch.Generator().manual_seed(0)
        x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, generator=g)
        self.x = x.to(cfg.device, memory_format=fmt)
        classes = (getattr(self.model, "config", None) or {}).get("num_classes", 1000)  # a file's own head
        self.y = torch.randint(0, classes, (cfg.batch_size,), generator=g).to(cfg.device)
        self.onnx = None
        if spec.startswith("ort:"):
            if cfg.device != "cpu" or cfg.dtype != "float32" or cfg.compile:
                raise ValueError(f"{spec}: ONNX Runtime rows run on the CPU in float32, eager")
            self.onnx, self.train = _onnx_session(self.model, cfg), None

    def infer(self) -> None:
        if self.onnx is not None:
            self.onnx(self.x.contiguous())
            return
        self.model.eval()
        with torch.no_grad(), _autocast(self.cfg):
            self.step_fn(self.x)

    def train(self) -> None:
        self.model.train()
        with _autocast(self.cfg):
            loss = nn.functional.cross_entropy(self.step_fn(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def _read_peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def train_peak_memory_mb(spec: str, cfg: BenchConfig) -> float:
    """Peak memory of a training step of ``spec``, in this process (call it in a fresh one on CPU)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    runner = Runner(spec, cfg)
    runner.train()  # warm-up: optimizer state, allocator caches, compiled graphs
    if cfg.device.startswith("cuda"):  # CUDA only
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        runner.train()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark to the current RSS
    runner.train()
    return _read_peak_rss_mb()


def _memory_in_subprocess(spec: str, cfg: BenchConfig) -> float:
    code = (
        "import json, sys; from ecanet.studies.bench import BenchConfig, train_peak_memory_mb; "
        "print(train_peak_memory_mb(sys.argv[1], BenchConfig(**json.loads(sys.argv[2]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, spec, json.dumps(asdict(cfg))], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement of {spec} failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.strip().splitlines()[-1])


def _summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Measure every model of ``cfg`` and return one row per model (see ``ecanet bench --help``)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.compile:  # every model shares the same forward code: give dynamo room for all their graphs
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 8 * len(cfg.models))
        torch._dynamo.config.accumulated_recompile_limit = max(
            torch._dynamo.config.accumulated_recompile_limit, 64 * len(cfg.models)
        )
    # Rows by label: the specs, then the control (a separately built instance of the first model, which
    # differs from it only by where its tensors lie and when it runs: an A/A comparison).
    specs = {spec: spec for spec in cfg.models}
    if cfg.control:
        specs[CONTROL.format(cfg.models[0])] = cfg.models[0]
    runners = {label: Runner(spec, cfg) for label, spec in specs.items()}
    phases = ["infer", "train"] if cfg.train else ["infer"]
    sync = torch.cuda.synchronize if cfg.device.startswith("cuda") else lambda: None
    steps = {phase: {label: getattr(r, phase) for label, r in runners.items() if getattr(r, phase)} for phase in phases}
    for label in runners:  # every phase warmed up before any is timed
        log(f"warm-up {label}")
        for _ in range(cfg.warmup):
            for phase in phases:
                if label in steps[phase]:
                    steps[phase][label]()
    # Inference, then training, each interleaved across models: a training step frees large buffers that
    # the next step must fault in again, so mixing the phases would add noise.
    timings: dict[str, dict[str, list[float]]] = {}
    for phase in (p for p in phases if steps[p]):
        first = next(iter(steps[phase].values()))  # every model takes the first model's number of calls
        calls = calls_per_repeat(first, cfg.repeat_seconds, sync)
        log(f"{phase}: {cfg.repeats} interleaved repeats of {calls} step(s) each")
        seconds = interleaved(steps[phase], cfg.repeats, sync=sync, log=log, calls=calls)
        timings[phase] = {label: [cfg.batch_size / t for t in ts] for label, ts in seconds.items()}
    rows = []
    for label, r in runners.items():
        cost = complexity(r.model, (3, cfg.image_size, cfg.image_size))
        row = {"model": label, "params": cost["params"], "macs": cost["macs"]}
        for phase in ("infer", "train"):
            median, lo, hi = _summary(timings[phase][label]) if label in timings.get(phase, {}) else (None,) * 3
            row.update({f"{phase}_img_s": median, f"{phase}_img_s_min": lo, f"{phase}_img_s_max": hi})
        measured = cfg.memory and r.train is not None
        memory = [_memory_in_subprocess(specs[label], cfg) for _ in range(cfg.memory_repeats)] if measured else None
        row["train_peak_mem_mb"] = min(memory) if memory else None
        rows.append(row)
    base = rows[0]
    for row in rows:
        for phase in ("infer", "train"):
            series = timings.get(phase, {})
            paired = row["model"] in series and base["model"] in series
            row[f"{phase}_ratio"] = _paired_ratio(series[row["model"]], series[base["model"]]) if paired else None
        both = row["train_peak_mem_mb"] is not None and base["train_peak_mem_mb"] is not None
        row["mem_ratio"] = row["train_peak_mem_mb"] / base["train_peak_mem_mb"] if both else None
    return rows


def _paired_ratio(values: list[float], base: list[float]) -> float:
    """Median over repeats of value / base of the same repeat."""
    return statistics.median(v / b for v, b in zip(values, base, strict=True))


def format_rows(rows: list[dict], lead: tuple[str, ...] = ()) -> str:
    """The table ``ecanet bench`` prints; ``lead`` names row keys shown first (a suite's family, a sweep's
    size)."""
    head = [*lead, "model", "params", "GMACs", "infer img/s (min-max)", "x", "train img/s (min-max)", "x"]
    head += ["peak MB", "x"]
    cells = []
    for r in rows:
        mem = "-" if r["train_peak_mem_mb"] is None else f"{r['train_peak_mem_mb']:.0f}"
        mem_x = "-" if r["mem_ratio"] is None else f"{r['mem_ratio']:.3f}"
        cells.append([*(str(r[k]) for k in lead), r["model"], f"{r['params']:,}", f"{r['macs'] / 1e9:.3f}"])
        for phase in ("infer", "train"):
            if r[f"{phase}_img_s"] is None:
                cells[-1] += ["-", "-"]
                continue
            lo, hi = r[f"{phase}_img_s_min"], r[f"{phase}_img_s_max"]
            ratio = "-" if r[f"{phase}_ratio"] is None else f"{r[f'{phase}_ratio']:.3f}"
            cells[-1] += [f"{r[f'{phase}_img_s']:.2f} ({lo:.2f}-{hi:.2f})", ratio]
        cells[-1] += [mem, mem_x]
    return render_table(head, cells)


def plot_rows(rows: list[dict], path: str | Path, ylabel: str | None = None) -> Path:
    """Bar chart of the three ratios per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("infer_ratio", "inference"), ("train_ratio", "training"), ("mem_ratio", "peak memory")]
    keys = [(k, label) for k, label in keys if any(r[k] is not None for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4))
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(rows))]
        ax.bar(xs, [r[key] or 0.0 for r in rows], width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), [r["model"] for r in rows], rotation=20, ha="right")
    ax.set_ylabel(ylabel or f"ratio to {rows[0]['model']}")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
