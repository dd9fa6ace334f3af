"""Layer widths of a channel-pruned network: read them off a model, and give a freshly built zoo model the
same widths, so that a pruned weights file rebuilds its network with no other input (and with no pruning
library installed).

The widths are recorded per module name: ``[in, out]`` channels of every convolution and linear layer,
``[n, n]`` of every BatchNorm and attention module. Depthwise convolutions (MobileNetV2) keep
``groups == in_channels``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..layers import CBAM, ECA, SE, is_attention

Widths = dict[str, list[int]]


def _channels(m: nn.Module) -> list[int] | None:
    if isinstance(m, nn.Conv2d):
        return [m.in_channels, m.out_channels]
    if isinstance(m, nn.Linear):
        return [m.in_features, m.out_features]
    if isinstance(m, nn.BatchNorm2d):
        return [m.num_features, m.num_features]
    if is_attention(m):
        return [m.channels, m.channels] if m.channels is not None else None
    return None


def layer_widths(model: nn.Module) -> Widths:
    """``{module name: [in, out]}`` of every layer whose parameters depend on its channel counts."""
    # Layers inside an attention module follow its channel count (CBAM's spatial 2 -> 1 convolution).
    inner = tuple(n + "." for n, m in model.named_modules() if is_attention(m))
    return {
        name: c
        for name, m in model.named_modules()
        if (c := _channels(m)) is not None and not (inner and name.startswith(inner))
    }


def _empty_like(p: nn.Parameter | torch.Tensor | None, shape: tuple[int, ...]):
    if p is None:
        return None
    t = torch.empty(shape, dtype=p.dtype, device=p.device)
    return nn.Parameter(t, requires_grad=p.requires_grad) if isinstance(p, nn.Parameter) else t


def _resize_conv(m: nn.Conv2d, cin: int, cout: int) -> None:
    depthwise = m.groups > 1 and m.groups == m.in_channels
    if m.groups > 1 and not depthwise:
        raise ValueError(f"cannot resize a grouped convolution with {m.groups} groups")
    m.groups = cin if depthwise else 1
    m.in_channels, m.out_channels = cin, cout
    m.weight = _empty_like(m.weight, (cout, cin // m.groups, *m.kernel_size))
    m.bias = _empty_like(m.bias, (cout,))


def _resize_linear(m: nn.Linear, cin: int, cout: int) -> None:
    m.in_features, m.out_features = cin, cout
    m.weight = _empty_like(m.weight, (cout, cin))
    m.bias = _empty_like(m.bias, (cout,))


def _resize_norm(m: nn.BatchNorm2d, c: int) -> None:
    m.num_features = c
    for key in ("weight", "bias"):
        setattr(m, key, _empty_like(getattr(m, key), (c,)))
    for key in ("running_mean", "running_var"):
        if getattr(m, key) is not None:
            setattr(m, key, _empty_like(getattr(m, key), (c,)))


def resize_attention(m: nn.Module, c: int) -> None:
    """Give an attention module ``c`` channels: its channel count, and the parameters that depend on it
    (ECA-NS's per-channel kernels, the outer sides of SE's and CBAM's channel MLP). ECA's shared kernel
    does not depend on C and stays as trained."""
    if isinstance(m, ECA) and not m.shared:
        m.conv.in_channels = m.conv.out_channels = m.conv.groups = c
        m.conv.weight = _empty_like(m.conv.weight, (c, 1, m.kernel_size))
    elif isinstance(m, SE):
        _resize_linear(m.fc1, c, m.fc1.out_features)
        _resize_linear(m.fc2, m.fc2.in_features, c)
    elif isinstance(m, CBAM):
        first, last = m.channel_mlp[0], m.channel_mlp[-1]
        _resize_linear(first, c, first.out_features)
        _resize_linear(last, last.in_features, c)
    m.channels = c


def apply_widths(model: nn.Module, widths: Mapping[str, list[int]]) -> nn.Module:
    """Give ``model`` the recorded widths (parameters become uninitialised tensors of the new shapes, to be
    loaded from the file that recorded them); a name the model lacks is an error."""
    modules = dict(model.named_modules())
    unknown = sorted(set(widths) - set(modules))
    if unknown:
        raise ValueError(f"widths name layers the model does not have, e.g. {unknown[0]!r}")
    for name, (cin, cout) in widths.items():
        m = modules[name]
        if _channels(m) == [cin, cout]:
            continue
        if isinstance(m, nn.Conv2d):
            _resize_conv(m, cin, cout)
        elif isinstance(m, nn.Linear):
            _resize_linear(m, cin, cout)
        elif isinstance(m, nn.BatchNorm2d):
            _resize_norm(m, cout)
        elif is_attention(m):
            resize_attention(m, cout)
        else:
            raise ValueError(f"widths: {name!r} is a {type(m).__name__}, which has no channel widths")
    refresh_widths(model)
    return model


def refresh_widths(model: nn.Module) -> nn.Module:
    """Update what a zoo model records about its own widths (stage channels, feature size), after its
    layers changed width, and record the widths in ``model.config`` so that saving keeps them."""
    if hasattr(model, "sync_widths"):
        model.sync_widths()
    if isinstance(getattr(model, "config", None), dict):
        model.config["widths"] = layer_widths(model)
    return model


def set_eca_kernel(m: ECA, kernel_size: int) -> None:
    """Give an ECA module another (odd) kernel size: a fresh 1-D convolution of that size."""
    c = m.conv.in_channels
    m.kernel_size = kernel_size
    pad = (kernel_size - 1) // 2 if m.shared else 0
    m.conv = nn.Conv1d(
        c, c, kernel_size, padding=pad, padding_mode=m.padding, groups=c if not m.shared else 1, bias=False
    )


def reinitialize(model: nn.Module) -> nn.Module:
    """Fresh parameters for a network whose widths changed, as the zoo's constructors draw them: convolutions
    Kaiming-normal (fan out), BatchNorm scale 1 and shift 0, everything else its layer's own default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
        elif isinstance(m, (nn.Linear, nn.Conv1d)):
            m.reset_parameters()
    return model


def resized(model: nn.Module, widths: Mapping[str, list[int]], adaptive_k: bool = False) -> nn.Module:
    """``model`` with ``widths`` and fresh parameters, to train from scratch (a searched width configuration);
    with ``adaptive_k`` every ECA's kernel follows its new channel count (k = ψ(C), the paper's Eq. 9)."""
    from ..layers import eca_kernel_size

    apply_widths(model, widths)
    if adaptive_k:
        for m in model.modules():
            if isinstance(m, ECA) and m.channels is not None:
                set_eca_kernel(m, eca_kernel_size(m.channels))
    return reinitialize(model)


def write_widths_file(path, model_name: str, widths: Widths, adaptive_k: bool) -> None:
    """A width configuration that ``create_model(name, widths=path)`` and ``ecanet train --widths`` build."""
    import json
    from pathlib import Path

    payload = {"model": model_name, "adaptive_k": adaptive_k, "widths": widths}
    Path(path).write_text(json.dumps(payload, indent=1))


def read_widths_file(path, model_name: str) -> tuple[Widths, bool]:
    """(widths, adaptive_k) of a widths file written for ``model_name``; another model's file is an error."""
    import json
    from pathlib import Path

    try:
        payload = json.loads(Path(path).read_text())
        widths, adaptive_k, for_model = payload["widths"], bool(payload.get("adaptive_k")), payload["model"]
    except FileNotFoundError:
        raise ValueError(f"--widths: {path}: no such file") from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ValueError(f"--widths: {path}: not a widths file (JSON with model and widths)") from None
    if for_model != model_name:
        raise ValueError(f"--widths: {path} holds the widths of {for_model}, not {model_name}")
    return widths, adaptive_k
