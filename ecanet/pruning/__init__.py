"""Attention-guided channel pruning on Torch-Pruning (the "prune" extra): ECA's own gates, or the field's
criteria, rank channels; Torch-Pruning's dependency graph removes them from every coupled layer; least
squares compensates without retraining. docs/pruning.md explains the choices and measures them."""

from .compensate import compensate, refit
from .importance import CRITERIA, Criterion, ECAImportance, RandomImportance, SimilarityImportance, create_criterion
from .prune import PruneReport, prune

__all__ = [
    "CRITERIA",
    "Criterion",
    "ECAImportance",
    "PruneReport",
    "RandomImportance",
    "SimilarityImportance",
    "compensate",
    "create_criterion",
    "prune",
    "refit",
]
