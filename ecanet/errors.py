"""The errors a user can cause, each said in one line (the CLI prints them without a traceback), and the
gate for optional dependencies: a feature whose extra is not installed names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


class CheckpointError(ValueError):
    """A weights file that cannot be used: unreadable, unsafe, or for another architecture."""


class DataError(ValueError):
    """Unusable data, with the folder or flag to blame."""


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, nothing to resume, ...), said in one line."""


class ExportError(RuntimeError):
    """The exported model disagrees with PyTorch, or the format is unknown."""


class MissingExtraError(ImportError):
    """A feature needs an optional dependency that is not installed."""


# What each optional extra of pyproject.toml brings, by the module names the code imports.
EXTRAS: dict[str, tuple[str, ...]] = {
    "detection": ("pycocotools",),
    "export": ("onnx", "onnxscript", "onnxruntime"),
    "viz": ("pytorch_grad_cam",),
    "tensorboard": ("tensorboard",),
    "timm": ("timm",),
    "prune": ("torch_pruning",),
    "segmentation": ("segmentation_models_pytorch",),
}

USER_ERRORS = (ValueError, OSError, TrainingError, ExportError, MissingExtraError)  # OSError: unreadable files


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise MissingExtraError(
            f'needs the "{extra}" extra ({top} is not installed): pip install "ecanet[{extra}]"'
        ) from None
