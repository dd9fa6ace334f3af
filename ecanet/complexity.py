"""What a model costs: parameters and multiply-accumulates (MACs, which the paper's tables call FLOPs),
for the whole network and for its attention modules alone.

MACs come from PyTorch's own ``torch.utils.flop_counter`` (which counts 2 FLOPs per MAC in convolutions and
matrix products). The counter does not see elementwise work, so the pooling sums and gating products of
the attention modules are added analytically (``attention_extra_ops``), and said to be.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .layers import is_attention


def complexity(model: nn.Module, input_size: tuple[int, ...] = (3, 224, 224)) -> dict[str, int]:
    """Per-image cost of ``model`` at ``input_size`` (C, H, W).

    Returns params, macs, attention_params, attention_macs (the attention's convolutions and FC layers,
    from the FLOP counter) and attention_extra_ops (its pooling and gating, computed analytically).
    The forward pass runs on the device the model is on; build it under ``torch.device("meta")`` to count
    without computing. Fused ECA blocks are counted through the plain formulation: the same arithmetic.
    """
    ref = next(model.parameters())
    attention = {name: m for name, m in model.named_modules() if is_attention(m) and name}
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, name=name: shapes.__setitem__(name, tuple(args[0].shape)))
        for name, m in attention.items()
    ]
    counter = FlopCounterMode(display=False)
    was_training = model.training
    try:
        model.eval()
        with counter, torch.no_grad():
            model(torch.zeros(1, *input_size, device=ref.device, dtype=ref.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    counts = counter.get_flop_counts()
    root = type(model).__name__
    attention_flops = sum(sum(counts.get(f"{root}.{name}", {}).values()) for name in attention)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "macs": int(counter.get_total_flops()) // 2,
        "attention_params": sum(p.numel() for m in attention.values() for p in m.parameters()),
        "attention_macs": int(attention_flops) // 2,
        "attention_extra_ops": sum(m.extra_ops(shapes[name]) for name, m in attention.items() if name in shapes),
    }
