"""Image classification (Section 4.1 of the paper): data, training, evaluation."""

from .evaluate import evaluate
from .train import ClassificationStep, build_datasets, build_model, train

__all__ = ["ClassificationStep", "build_datasets", "build_model", "evaluate", "train"]
