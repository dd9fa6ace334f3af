"""Training configuration: defaults, a task's recipes, a saved config file and flags, merged in that order
(each later source overrides the earlier ones); the resolved config is saved as OUT/config.json.

``LoopConfig`` holds what the shared loop (``ecanet.training.fit``) reads; each task's config, in its own
package, adds only its own fields (``ecanet.classification.config.TrainConfig``,
``ecanet.detection.config.DetectConfig``, ...). Every field carries its flag's help text, so the command line
is generated from the config and nothing lists a field twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar


def option(default: Any = None, help: str = "", factory: Any = None, **cli: Any) -> Any:
    """A config field with its flag's help text, and argparse settings where the type alone does not say."""
    meta = {"help": help, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class LoopConfig:
    """What every task's training loop reads: optimisation, schedule, precision, processes, files."""

    model: str = option("", "the model to train")
    output: str = option("runs/ecanet", "output folder (checkpoints, metrics.jsonl, curves.png, summary.json)")
    epochs: int = option(12, "epochs to train")
    budget_minutes: float | None = option(
        None, "wall-time budget per run: the epochs become those that fit, estimated from the first epoch"
    )
    batch_size: int = option(64, "per process")
    lr: float | None = option(None, "absolute learning rate (default: base-lr x global batch / base-batch)")
    base_lr: float = option(0.1, "learning rate per base-batch images (linear scaling rule)")
    base_batch: int = option(256, "the global batch that base-lr is given for")
    optimizer: str = option("sgd", "sgd | adamw")
    momentum: float = option(0.9, "SGD momentum")
    nesterov: bool = option(False, "Nesterov momentum")
    weight_decay: float = option(5e-4, "weight decay")
    schedule: str = option("cosine", "step | multistep | cosine | exponential | poly | constant")
    step_size: int = option(30, "step: epochs between decays")
    milestones: list[int] = option(help="multistep: epochs at which the lr decays", factory=list)
    gamma: float = option(0.1, "step / multistep / exponential: decay factor")
    warmup_epochs: float = option(0.0, "linear warmup, in (fractional) epochs")
    ema_decay: float = option(0.0, "EMA of weights (0: none)")
    workers: int | None = option(
        None, "data-loading processes per training process (default: the CPUs / local processes, at most 8)"
    )
    prefetch_factor: int | None = option(None, "batches each data-loading process loads ahead (default: PyTorch's, 2)")
    seed: int = option(0, "random seed")
    resume: str | None = option(
        None,
        "checkpoint to resume; with no value, OUT/checkpoint.pt; 'auto': OUT/checkpoint.pt if there is one, else start fresh",
        nargs="?",
        const="",
    )
    checkpoint_every: int | None = option(None, "also checkpoint every N steps, mid-epoch (resumable there)")
    checkpoint_minutes: float | None = option(None, "also checkpoint every M minutes, mid-epoch (resumable there)")
    stop_signals: list[str] = option(
        help="signals that stop the run after its current step with a mid-epoch checkpoint (exit code 75)",
        factory=lambda: ["SIGTERM", "SIGUSR1"],
    )
    amp: bool = option(False, "mixed precision: bf16 (CPU, and GPUs that have it), else fp16 with grad scaling")
    amp_dtype: str | None = option(None, "bfloat16 | float16 (default: bfloat16 where supported, else float16)")
    accumulate_steps: int = option(1, "micro-batches per optimizer step (gradient accumulation)")
    clip_grad: float | None = option(
        None, "clip the gradients' global L2 norm to this value (unscaled first under AMP)"
    )
    skip_nonfinite: int = option(
        0, "skip up to this many steps with a NaN/Inf loss per epoch, warning for each (0: stop at the first)"
    )
    compile: bool = option(False, "torch.compile the model")
    cudnn_benchmark: bool = option(True, "CUDA: let cuDNN pick the fastest convolution for fixed input sizes")
    tf32: bool = option(True, "CUDA: TF32 for float32 matrix products and convolutions (precision 'high')")
    device: str | None = option(None, "cpu | cuda | cuda:N (default: CUDA when available)")

    def __post_init__(self) -> None:
        if self.workers is None:
            self.workers = default_workers()


def default_workers() -> int:
    """Data-loading processes per training process: this machine's CPUs shared among the processes torchrun
    starts on it, at most 8 (the usual ceiling: more adds memory, rarely speed)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, cpus // max(local, 1)))


C = TypeVar("C", bound=LoopConfig)


def field_names(config_class: type[LoopConfig]) -> set[str]:
    return {f.name for f in fields(config_class)}


def read_json(path: str | Path, flag: str, error: type[ValueError] = ValueError):
    """The JSON in ``path``; a missing or corrupt file is one ``error`` naming the flag and the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{flag}: {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{flag}: {path}: not valid JSON ({e})") from None


def check_fields(values: object, config_class: type[LoopConfig], where: str) -> dict:
    """``values`` if it is a JSON object of ``config_class``'s fields; else one error naming ``where``."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a JSON object of config fields")
    unknown = sorted(set(values) - field_names(config_class))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} for a {config_class.__name__}")
    return values


def load_config_file(path: str | Path, config_class: type[LoopConfig]) -> dict:
    """The values of a saved config.json, checked against ``config_class``'s fields."""
    return check_fields(read_json(path, "--config"), config_class, f"--config: {path}")


def merge(config_class: type[C], *sources: dict) -> C:
    """``config_class`` with each source's values over the defaults, later sources first; None is no value."""
    values: dict = {}
    for source in sources:
        values.update({k: v for k, v in source.items() if v is not None})
    unknown = sorted(set(values) - field_names(config_class))
    if unknown:
        raise ValueError(f"unknown config keys {unknown} for a {config_class.__name__}")
    return config_class(**values)


def save_config(cfg: LoopConfig, path: Path) -> None:
    path.write_text(json.dumps(asdict(cfg), indent=2))
