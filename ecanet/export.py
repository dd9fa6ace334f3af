"""Export for deployment: ONNX (checked with ONNX Runtime) or TorchScript, with a dynamic batch size.

After writing the file, the exported model is run on a sample batch of another size than the one it was
traced with, and the largest absolute difference to PyTorch is reported; above ``tolerance`` the export
fails. The fast ECA path is exported as the plain formulation, the same arithmetic without in-place ops, so the
exported graph also runs with autograd enabled.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .models import plain_formulation

FORMATS = ("onnx", "torchscript")


class ExportError(RuntimeError):
    """The exported model disagrees with PyTorch, or the format is unknown."""


def export_model(
    model: nn.Module, path: str | Path, fmt: str = "onnx", image_size: int = 224, tolerance: float = 1e-4
) -> dict:
    """Write ``model`` to ``path`` as ``fmt`` and check it; returns format, path and max_abs_diff."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: unknown format {fmt!r}; choose one of {FORMATS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    g = torch.Generator().manual_seed(0)
    trace_batch = torch.randn(2, 3, image_size, image_size, generator=g)
    check_batch = torch.randn(3, 3, image_size, image_size, generator=g)  # another batch size: dynamic axis
    with torch.no_grad(), plain_formulation(model):
        expected = model(check_batch)
        if fmt == "onnx":
            got = _onnx(model, trace_batch, check_batch, path)
        else:
            got = _torchscript(model, trace_batch, check_batch, path)
    diff = float((got - expected).abs().max())
    if not diff <= tolerance:
        raise ExportError(f"{path}: exported model differs from PyTorch by {diff:.3g} (tolerance {tolerance:g})")
    return {"format": fmt, "path": str(path), "max_abs_diff": diff}


def _onnx(model: nn.Module, trace_batch: torch.Tensor, check_batch: torch.Tensor, path: Path) -> torch.Tensor:
    import onnxruntime

    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        model,
        (trace_batch,),
        str(path),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        external_data=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": check_batch.numpy()})[0])


def _torchscript(model: nn.Module, trace_batch: torch.Tensor, check_batch: torch.Tensor, path: Path) -> torch.Tensor:
    traced = torch.jit.trace(model, trace_batch)
    traced.save(str(path))
    return torch.jit.load(str(path))(check_batch)
