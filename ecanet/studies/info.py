"""The zoo's complexity table (``ecanet info``): params and FLOPs in decimal units and in the paper's.

The paper's tables print binary units (M = 2^20, G = 2^30), as the authors' counting tool did, and call
multiply-accumulates FLOPs; both conventions are shown so numbers can be matched to Table 2 and 3.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..complexity import complexity
from ..models import ARCHS, create_model, list_models, parse_model_name
from .table import render_table

COLUMNS = [
    ("model", "model", "{}"),
    ("params_m", "Params (M)", "{:.3f}"),
    ("params_paper", "Params (2^20)", "{:.2f}"),
    ("gmacs", "GMACs", "{:.3f}"),
    ("gflops_paper", "FLOPs (2^30)", "{:.3f}"),
    ("attention_params", "Attn params", "{:,}"),
    ("attention_macs", "Attn MACs", "{:,}"),
    ("attention_extra_ops", "Attn pool+gate ops", "{:,}"),
    ("eca_k", "ECA k per stage", "{}"),
]


def default_input_size(name: str) -> int:
    return 32 if ARCHS[parse_model_name(name)[1]].dataset == "cifar" else 224


def model_info(name: str, image_size: int | None = None) -> dict:
    """One row of the table: a zoo name is counted on the meta device, so nothing is computed; a weights
    file (e.g. a pruned network) is counted as the network it holds."""
    if Path(name).is_file():
        from ..weights import load_checkpoint

        model = load_checkpoint(name)
        size = image_size or default_input_size(model.config["model"])
    else:
        size = image_size or default_input_size(name)
        with torch.device("meta"):
            model = create_model(name)
    cost = complexity(model, (3, size, size))
    return {
        "model": name,
        "image_size": size,
        **cost,
        "params_m": cost["params"] / 1e6,
        "params_paper": cost["params"] / 2**20,
        "gmacs": cost["macs"] / 1e9,
        "gflops_paper": cost["macs"] / 2**30,
        "eca_k": model.config["eca_k"],
    }


def info_table(names: list[str] | None = None, image_size: int | None = None) -> list[dict]:
    """Rows for ``names`` (default: every ImageNet model of the zoo)."""
    return [model_info(n, image_size) for n in (names or list_models(dataset="imagenet"))]


def format_table(rows: list[dict]) -> str:
    body = [[fmt.format(row[key]) if row[key] is not None else "-" for key, _, fmt in COLUMNS] for row in rows]
    return render_table([title for _, title, _ in COLUMNS], body)
