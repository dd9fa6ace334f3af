"""The device policy: the fused tail is a CPU optimisation; on every other device each block runs the plain
formulation (BatchNorm, the attention module, addition, ReLU), and no CPU kernel of ``fused/kernels.py`` is
reachable. Checked on the ``meta`` device, which runs every operator's shape logic and no data."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ecanet import create_model
from ecanet.layers.fused import DEFAULT_DEVICES, fast_path_applies, fuses_on, kernels, set_fused

DEEP = pytest.mark.slow  # the same blocks as ResNet-50, more of them
FAMILIES = [
    "resnet18",
    "resnet34",
    "resnet50",
    pytest.param("resnet101", marks=DEEP),
    pytest.param("resnet152", marks=DEEP),
    "mobilenet_v2",
    "resnet20",
]
ATTENTIONS = ["", "se_", "cbam_", "eca_", "ceca_", "eca_ns_"]


@pytest.mark.parametrize(
    "device,fuses", [("cpu", True), ("cuda", False), ("cuda:1", False), ("mps", False), ("xpu", False), ("meta", False)]
)
def test_fused_tail_runs_on_the_cpu_only_by_default(device, fuses):
    assert fuses_on(torch.device(device)) is fuses
    assert fuses_on(torch.device(device), DEFAULT_DEVICES) is fuses
    assert fuses_on(torch.device(device), {"cpu", device.split(":")[0]})  # the override for experiments


def test_fast_path_applies_reads_the_input_device_and_the_override():
    model = create_model("eca_resnet20")
    block = model.layer1[0]
    cpu, meta = torch.empty(1, 16, 4, 4), torch.empty(1, 16, 4, 4, device="meta")
    assert fast_path_applies(block.fused, block.eca, block.bn2, cpu, block.fused_devices)
    assert not fast_path_applies(block.fused, block.eca, block.bn2, meta, block.fused_devices)
    set_fused(model, True, devices=("cpu", "meta"))
    assert fast_path_applies(block.fused, block.eca, block.bn2, meta, block.fused_devices)
    set_fused(model, False)
    assert not fast_path_applies(block.fused, block.eca, block.bn2, cpu, block.fused_devices)
    assert block.fused_devices == DEFAULT_DEVICES  # set_fused without devices goes back to the default


class OpRecorder(TorchDispatchMode):
    """Every ATen operator called, by name (``aten._add_relu_.Tensor``...)."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def count(ops, name):
    return sum(op.startswith(name) for op in ops)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("attn", ATTENTIONS, ids=lambda a: a.rstrip("_") or "none")
@pytest.mark.parametrize("family", FAMILIES)
def test_meta_device_runs_the_plain_formulation(family, attn, train, monkeypatch):
    """Forward and backward on ``meta``: no call reaches the fused tail or a CPU kernel, ``_add_relu_`` is
    never called, and BatchNorm's backward runs once per BatchNorm (the plain formulation's count: the fused
    step would use it as a reduction in forward and replace the blocks' last norms' calls)."""
    reached = []
    for module in ("ecanet.models.resnet", "ecanet.models.mobilenetv2"):
        monkeypatch.setattr(f"{module}.fused_tail", lambda *a, **k: reached.append("fused_tail"))
    for dispatch in kernels.REFERENCES:
        monkeypatch.setattr(dispatch, "kernel", lambda *a, _n=dispatch.__name__, **k: reached.append(_n))
    model = create_model(attn + family, num_classes=10).to("meta").train(train)
    size = 32 if family == "resnet20" else 224
    x = torch.empty(2, 3, size, size, device="meta", requires_grad=True)
    with OpRecorder() as forward:
        out = model(x)
    with OpRecorder() as backward:
        out.sum().backward()
    assert reached == []
    assert count(forward.ops + backward.ops, "aten._add_relu") == 0
    assert count(forward.ops, "aten.native_batch_norm_backward") == 0
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert count(backward.ops, "aten.native_batch_norm_backward") == norms
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters())


def test_the_override_takes_the_fused_tail_on_meta(monkeypatch):
    """The recorder sees a difference: with the override, blocks on ``meta`` take the fused tail (each
    fused norm's backward written out, so fewer BatchNorm backward calls), through the kernels' references,
    never the CPU kernels."""
    reached = []
    for dispatch in kernels.REFERENCES:
        monkeypatch.setattr(dispatch, "kernel", lambda *a, _n=dispatch.__name__, **k: reached.append(_n))
    model = set_fused(create_model("eca_resnet20").to("meta").eval(), True, devices=("cpu", "meta"))
    with OpRecorder() as ops:
        model(torch.empty(2, 3, 32, 32, device="meta", requires_grad=True)).sum().backward()
    assert reached == []
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert count(ops.ops, "aten.native_batch_norm_backward") == norms - len(model.blocks())


def test_a_kernel_that_fails_its_check_falls_back_to_its_reference(monkeypatch, caplog):
    """An import-time check on a PyTorch whose op differs: the kernel is marked broken, named in the log, and
    its reference runs on CPU tensors too."""

    def changed(*args, **kwargs):
        raise TypeError("native_batch_norm_backward() got an unexpected keyword")

    monkeypatch.setattr(kernels, "BROKEN", set())
    monkeypatch.setattr(torch.ops.aten, "native_batch_norm_backward", changed, raising=False)
    with caplog.at_level("WARNING", logger="ecanet"):
        kernels._self_check()
    assert "moments" in kernels.BROKEN and "channel_sums" in kernels.BROKEN
    assert "global_average_pool" not in kernels.BROKEN
    assert "fused kernel moments disagrees with its reference" in caplog.text
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    mean, square = kernels.moments(x, torch.float64)  # the reference, without raising
    torch.testing.assert_close(mean, x.mean((2, 3)))
    torch.testing.assert_close(square, (x * x).mean((2, 3)))
