"""Removing channels that carry exactly nothing: how much each attention type's output moves (docs/pruning.md).

Every other residual channel of stage 1 of a CIFAR ResNet-20 (random weights, BatchNorm statistics from three
batches) is zeroed at every BatchNorm that writes it; pruning exactly those channels (``bn`` criterion, inner
channels kept) leaves a network without attention unchanged. The printed number is max |logit change| /
max |logit| on 32 random images. Needs the "prune" extra.
"""

from __future__ import annotations

import torch

import ecanet
from ecanet.pruning import prune
from ecanet.studies.timing import provenance


def dead_channel_change(name: str, eca_k: str | list[int] = "released") -> float:
    torch.manual_seed(0)
    model = ecanet.create_model(name, num_classes=10, eca_k=eca_k)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32))
    model.eval()
    with torch.no_grad():
        for norm in [model.bn1, *(block.bn2 for block in model.layer1)]:
            norm.weight[1::2] = 0
            norm.bias[1::2] = 0
    inner = [
        n
        for n, _ in model.named_modules()
        if (n.endswith("conv1") and n != "conv1") or (n.startswith(("layer2", "layer3")) and n.endswith("conv2"))
    ]
    pruned, report = prune(model, [torch.randn(16, 3, 32, 32)], "bn", ratio=0.5, ignore=inner)
    assert report.kept["layer1.0.bn2"]["out"] == list(range(0, 16, 2))
    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        before, after = model(x), pruned(x)
    return ((after - before).abs().max() / before.abs().max()).item()


if __name__ == "__main__":
    print("\n".join(provenance("python benchmarks/dead_channels.py")))
    for name, k in [
        ("resnet20", "released"),
        ("se_resnet20", "released"),
        ("cbam_resnet20", "released"),
        ("eca_resnet20", "released"),
        ("ceca_resnet20", [5, 5, 5]),
        ("eca_ns_resnet20", "released"),
    ]:
        print(f"{name:16s} k={k}: {dead_channel_change(name, k):.1e}")
