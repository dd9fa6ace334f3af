"""Export for deployment: ONNX (checked with ONNX Runtime), a ``torch.export`` program (``.pt2``) or
TorchScript (for older runtimes), with a dynamic batch size and, if asked, dynamic height and width.

After writing the file, it is loaded back as a deployment would load it and run on a sample batch of
another batch size than the one it was exported with (and, with ``dynamic_size``, at a second image size);
the largest absolute difference to PyTorch is reported, and above ``tolerance`` the export fails. The fast
ECA path is exported as the plain formulation: the same arithmetic, without in-place ops.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import ExportError, require

FORMATS = ("onnx", "exported", "torchscript")
Runner = Callable[[Tensor], Tensor]


def export_model(
    model: nn.Module,
    path: str | Path,
    fmt: str = "onnx",
    image_size: int = 224,
    tolerance: float = 1e-4,
    dynamic_size: bool = False,
) -> dict:
    """Write ``model`` to ``path`` as ``fmt`` and check it; returns format, path, the sizes checked and
    max_abs_diff (the largest over the checks)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: unknown format {fmt!r}; choose one of {FORMATS}")
    path = Path(path)
    if fmt == "exported" and path.suffix != ".pt2":
        raise ExportError(f"--output: {path}: a torch.export program is saved as a .pt2 file")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    device = next(model.parameters()).device  # a GPU model exports from the GPU (ONNX Runtime checks on a CPU)
    g = torch.Generator().manual_seed(0)
    sizes = [image_size, image_size + 32] if dynamic_size else [image_size]
    example = torch.randn(2, 3, image_size, image_size, generator=g).to(device)
    checks = [torch.randn(3, 3, s, s, generator=g).to(device) for s in sizes]  # another batch: the dynamic axis
    exporter = {"onnx": _onnx, "exported": _exported, "torchscript": _torchscript}[fmt]
    names = getattr(model, "config", {}).get("classes")
    metadata = {"ecanet.classes": json.dumps(names)} if names else {}  # what ecanet predict reads off weights
    # Written beside the target and moved there only once it passed its check: a failed export leaves no
    # file, and an existing file at ``path`` stays as it was.
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        with torch.no_grad():
            run = exporter(model, example, partial, dynamic_size, metadata)
            diff = max(float((run(x) - model(x)).abs().max()) for x in checks)
        if not diff <= tolerance:
            raise ExportError(f"{path}: exported model differs from PyTorch by {diff:.3g} (tolerance {tolerance:g})")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return {"format": fmt, "path": str(path), "sizes": sizes, "max_abs_diff": diff}


def _dynamic_shapes(dynamic_size: bool) -> tuple[dict, ...]:
    """Batch always dynamic; height and width too when asked (the backbones take any size)."""
    shapes = {0: torch.export.Dim("batch", min=1, max=1024)}
    if dynamic_size:
        shapes |= {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    return (shapes,)


def _onnx(model: nn.Module, example: Tensor, path: Path, dynamic_size: bool, metadata: dict[str, str]) -> Runner:
    for module in ("onnx", "onnxscript"):  # torch.onnx's exporter imports them itself
        require(module, "export")
    onnxruntime = require("onnxruntime", "export")
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=_dynamic_shapes(dynamic_size),
        external_data=False,
    )
    if metadata:  # the graph's metadata_props
        onnx = require("onnx", "export")
        graph = onnx.load(str(path))
        for key, value in metadata.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(graph, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"images": x.cpu().numpy()})[0]).to(x.device)


def _exported(model: nn.Module, example: Tensor, path: Path, dynamic_size: bool, metadata: dict[str, str]) -> Runner:
    program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_shapes(dynamic_size))
    torch.export.save(program, str(path), extra_files=metadata or None)
    return torch.export.load(str(path)).module()


def _torchscript(model: nn.Module, example: Tensor, path: Path, dynamic_size: bool, metadata: dict[str, str]) -> Runner:
    # Tracing records no shapes for these backbones (adaptive pooling), so the traced graph takes any size;
    # the check at a second size confirms it when dynamic_size is asked for.
    torch.jit.trace(model, example).save(str(path), _extra_files=metadata)
    return torch.jit.load(str(path))
