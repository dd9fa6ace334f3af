"""Classification's training configuration: the shared loop's fields (``LoopConfig``) plus data, model and
fine-tuning settings, and the paper's recipes (Section 4.1)."""

from __future__ import annotations

from dataclasses import dataclass

from ..training.config import LoopConfig, load_config_file, merge, option


@dataclass
class TrainConfig(LoopConfig):
    """Classification: the loop's fields plus data, model and fine-tuning settings."""

    model: str = option("eca_resnet20", "zoo model name (default eca_resnet20), or tv:NAME / timm:NAME")
    data: str | None = option(None, "ImageFolder root with train/ and val/ (default: the embedded digits dataset)")
    train_dir: str | None = option(None, "training folder, if not DATA/train")
    val_dir: str | None = option(None, "validation folder, if not DATA/val")
    val_split: float | None = option(None, "hold out this fraction of the training folder for validation (stratified)")
    split_seed: int = option(0, "--val-split: the split's seed (fixed apart from --seed: one split for every run)")
    in_memory: bool = option(False, "decode the images once and hold them as uint8 in memory (small images)")
    recipe: str | None = option(None, "paper | paper-mobilenet | modern: the recipe's values become the defaults")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy")
    image_size: int | None = option(None, "input side (default: 16 for the embedded digits, 224 for folders)")
    augment: bool = option(True, "random crops and flips (--no-augment: the evaluation transform)")
    pretrained: str | None = option(None, "weights to start from: ours, the authors' .pth.tar or torchvision's")
    num_classes: int | None = option(None, "default: the number of class folders")
    freeze_stages: int = option(0, "freeze the stem and this many stages")
    eca_k: str | list[int] = option("released", "released | adaptive | one odd int per stage", nargs="+", type=str)
    widths: str | None = option(None, "a width configuration to train from scratch (ecanet search-widths' widths.json)")
    replace_se: bool = option(False, "swap every SE module of the model for ECA (after --pretrained is loaded)")
    attach_eca: bool = option(False, "attach ECA to every block of a supported family (after --pretrained)")
    channels_last: bool = option(False, "channels_last memory format")
    sync_bn: bool = option(False, "SyncBatchNorm across processes (CUDA only)")
    freeze_bn: bool = option(False, "BatchNorm statistics and affine parameters fixed (small batches, fine-tuning)")
    compare: list[str] = option(
        help="other models trained the same way, reported side by side (no names: none)", factory=list, nargs="*"
    )


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


def parse_eca_k(value: str | list) -> str | list[int]:
    """'released', 'adaptive' or one odd int per stage, from the flag's words or a config value."""
    words = [value] if isinstance(value, str) else list(value)
    if len(words) == 1 and words[0] in ("released", "adaptive"):
        return words[0]
    try:
        return [int(v) for v in words]
    except (TypeError, ValueError):
        raise ValueError(
            f"--eca-k: expected 'released', 'adaptive' or odd ints, got {' '.join(map(str, words))}"
        ) from None


def resolve(recipe: str | None = None, config_file: str | None = None, **overrides) -> TrainConfig:
    """Defaults <- recipe <- config file <- overrides (None values in overrides are ignored)."""
    file_values = load_config_file(config_file, TrainConfig) if config_file else {}
    recipe = overrides.get("recipe") or file_values.get("recipe") or recipe
    recipe_values: dict = {}
    if recipe is not None:
        if recipe not in RECIPES:
            raise ValueError(f"--recipe: unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
        recipe_values = {**RECIPES[recipe], "recipe": recipe}
    cfg = merge(TrainConfig, recipe_values, file_values, overrides)
    cfg.eca_k = parse_eca_k(cfg.eca_k)
    return cfg
