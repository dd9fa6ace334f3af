"""Training configuration: defaults, the paper's recipes, a saved config file and flags, merged in that
order (each later source overrides the earlier ones); the resolved config is saved as OUT/config.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class TrainConfig:
    model: str = "eca_resnet20"
    data: str | None = None  # ImageFolder root with train/ and val/; None: the embedded digits dataset
    train_dir: str | None = None
    val_dir: str | None = None
    output: str = "runs/ecanet"
    recipe: str | None = None
    epochs: int = 12
    batch_size: int = 64  # per process
    lr: float | None = None  # None: base_lr * global batch / base_batch (linear scaling rule)
    base_lr: float = 0.1
    base_batch: int = 256
    optimizer: str = "sgd"  # sgd | adamw
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # step | multistep | cosine | exponential | constant
    step_size: int = 30  # step: epochs between decays
    milestones: list[int] = field(default_factory=list)  # multistep: epochs at which the lr decays
    gamma: float = 0.1  # step / multistep / exponential: decay factor
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0: no EMA of weights
    image_size: int | None = None  # None: 16 for the embedded digits, 224 for image folders
    augment: bool = True  # False: training images get the evaluation transform
    workers: int = 2
    seed: int = 0
    resume: str | None = None  # a checkpoint path, or "" for OUT/checkpoint.pt
    pretrained: str | None = None
    num_classes: int | None = None  # None: from the data
    freeze_stages: int = 0  # freeze the stem and this many stages
    eca_k: str | list[int] = "released"
    amp: bool = False
    amp_dtype: str | None = None  # None: bfloat16 on CPU, float16 on CUDA
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only)
    freeze_bn: bool = False  # BatchNorm statistics and affine parameters fixed (small batches, fine-tuning)
    device: str | None = None
    compare: list[str] = field(default_factory=list)  # other models trained alike, reported in a table


RECIPES: dict[str, dict] = {
    # Section 4.1 of the paper: ImageNet, ResNets.
    "paper": dict(
        optimizer="sgd",
        momentum=0.9,
        base_lr=0.1,
        base_batch=256,
        weight_decay=1e-4,
        epochs=100,
        schedule="step",
        step_size=30,
        gamma=0.1,
        image_size=224,
        batch_size=256,
        warmup_epochs=0.0,
        label_smoothing=0.0,
        ema_decay=0.0,
    ),
    # Section 4.1 of the paper: ImageNet, MobileNetV2.
    "paper-mobilenet": dict(
        optimizer="sgd",
        momentum=0.9,
        base_lr=0.045,
        base_batch=96,
        weight_decay=4e-5,
        epochs=400,
        schedule="exponential",
        gamma=0.98,
        image_size=224,
        batch_size=96,
        warmup_epochs=0.0,
        label_smoothing=0.0,
        ema_decay=0.0,
    ),
    # A current recipe: cosine with warmup, label smoothing, EMA of weights.
    "modern": dict(
        optimizer="sgd",
        momentum=0.9,
        nesterov=True,
        base_lr=0.2,
        base_batch=256,
        weight_decay=5e-5,
        epochs=120,
        schedule="cosine",
        warmup_epochs=5,
        label_smoothing=0.1,
        ema_decay=0.9998,
        image_size=224,
    ),
}

FIELDS = {f.name for f in fields(TrainConfig)}


def read_json(path: str | Path, flag: str, error: type[ValueError] = ValueError):
    """The JSON in ``path``; a missing or corrupt file is one ``error`` naming the flag and the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{flag}: {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{flag}: {path}: not valid JSON ({e})") from None


def load_config_file(path: str | Path) -> dict:
    values = read_json(path, "--config")
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise ValueError(f"--config: {path}: unknown keys {unknown}")
    return values


def resolve(recipe: str | None = None, config_file: str | None = None, **overrides) -> TrainConfig:
    """Defaults <- recipe <- config file <- overrides (None values in overrides are ignored)."""
    values: dict = {}
    file_values = load_config_file(config_file) if config_file else {}
    recipe = overrides.get("recipe") or file_values.get("recipe") or recipe
    if recipe is not None:
        if recipe not in RECIPES:
            raise ValueError(f"--recipe: unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
        values.update(RECIPES[recipe], recipe=recipe)
    values.update(file_values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}")
    return TrainConfig(**values)


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(json.dumps(asdict(cfg), indent=2))
