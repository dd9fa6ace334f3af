"""Inputs other than RGB (``in_chans``): a first convolution with N input channels, and RGB weights
adapted to it when a 3-channel file is loaded.

The adaptation is timm's rule (``adapt_input_conv``): for 1 channel the RGB kernels are summed; for N
they are repeated and scaled by 3/N, so a grey or multi-band image made of copies of one band gives the
responses the RGB network gave. Written here because timm is an optional extra.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn

log = logging.getLogger("ecanet")


def set_in_chans(model: nn.Module, in_chans: int) -> nn.Module:
    """Replace the model's first convolution (``model.first_conv`` names it) by one reading ``in_chans``
    channels, initialised as the network initialises its convolutions; returns the model."""
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    parent_name, _, attr = model.first_conv.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old: nn.Conv2d = getattr(parent, attr)
    if old.in_channels == in_chans:
        return model
    new = nn.Conv2d(
        in_chans,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        old.groups,
        old.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    setattr(parent, attr, new)
    return model


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """An RGB first-convolution weight (O, 3, kh, kw) for ``in_chans`` input channels."""
    if weight.shape[1] != 3:
        raise ValueError(f"only RGB (3-channel) first convolutions adapt, got {weight.shape[1]} channels")
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_chans / 3), 1, 1)[:, :in_chans] * (3 / in_chans)
    return w.to(weight.dtype)


def adapt_state(model: nn.Module, state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """``state`` with its RGB first convolution adapted to the model's input channels (unchanged when
    they agree or the model has no ``first_conv``)."""
    first = getattr(model, "first_conv", None)
    key = f"{first}.weight"
    if first is None or key not in state:
        return state
    want = model.get_submodule(first).in_channels
    have = state[key].shape[1]
    if have == want or have != 3:
        return state
    with torch.no_grad():
        adapted = adapt_input_conv(state[key], want)
    log.info("%s: RGB first convolution %s adapted to %d input channels", source, key, want)
    return {**state, key: adapted}
