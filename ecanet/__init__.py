"""ecanet: ECA-Net (Wang et al., CVPR 2020) for PyTorch - attention layers, the paper's backbones,
weights interop, complexity, training and evaluation, channel pruning, segmentation backbones."""

from .adapt import AttachReport, ReplaceReport, attach_eca, create_external, replace_se
from .classification import evaluate, train
from .classification.config import TrainConfig, resolve
from .complexity import complexity
from .layers import CBAM, ECA, SE, create_attention, eca_kernel_size
from .models import create_model, list_models, plain_formulation, set_fused
from .pruning import PruneReport, prune
from .segmentation import create_segmenter, load_segmenter
from .timm_models import register_timm
from .weights import (
    CheckpointError,
    LoadReport,
    init_from_torchvision,
    load_checkpoint,
    read_weights,
    save_weights,
)

__version__ = "0.1.0"

__all__ = [
    "CBAM",
    "ECA",
    "SE",
    "AttachReport",
    "CheckpointError",
    "LoadReport",
    "PruneReport",
    "ReplaceReport",
    "attach_eca",
    "complexity",
    "create_attention",
    "create_external",
    "create_model",
    "eca_kernel_size",
    "init_from_torchvision",
    "list_models",
    "load_checkpoint",
    "prune",
    "read_weights",
    "register_timm",
    "replace_se",
    "create_segmenter",
    "load_segmenter",
    "plain_formulation",
    "save_weights",
    "set_fused",
    "TrainConfig",
    "evaluate",
    "resolve",
    "train",
]
