import copy

import pytest
import torch
from torch import nn

from ecanet import ECA, create_model
from ecanet.layers import eca_residual
from ecanet.models import BasicBlock, Bottleneck, set_fused
from ecanet.models.mobilenetv2 import InvertedResidual


def blocks(attn):
    down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
    return {
        "basic": (BasicBlock(16, 16, attn=attn, kernel_size=3), 16),
        "bottleneck_down": (Bottleneck(16, 8, 2, down, attn=attn, kernel_size=5), 16),
        "bottleneck": (Bottleneck(32, 8, attn=attn, kernel_size=3), 32),
        "inverted_residual": (InvertedResidual(16, 16, 1, 6, attn=attn, kernel_size=3), 16),
        "inverted_no_shortcut": (InvertedResidual(16, 24, 2, 6, attn=attn, kernel_size=1), 16),
    }


def run(block, x):
    x = x.clone().requires_grad_()
    out = block(x)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
    return out.detach(), x.grad, [p.grad for p in block.parameters()]


def compare(fused_block, x, tol):
    plain_block = set_fused(copy.deepcopy(fused_block), False)
    assert fused_block.fused and not plain_block.fused
    (y1, gx1, gp1), (y2, gx2, gp2) = run(fused_block, x), run(plain_block, x)
    torch.testing.assert_close(y1, y2, **tol)
    torch.testing.assert_close(gx1, gx2, **tol)
    for a, b in zip(gp1, gp2):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("attn", ["eca", "ceca", "eca_ns"])
@pytest.mark.parametrize("kind", list(blocks("eca")))
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_equals_plain_fp64(attn, kind, channels_last):
    torch.manual_seed(0)
    block, c = blocks(attn)[kind]
    block = block.double()
    x = torch.randn(3, c, 8, 8, dtype=torch.float64)
    if channels_last:
        block, x = block.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    compare(block, x, {"atol": 1e-12, "rtol": 1e-10})


@pytest.mark.parametrize("kind", list(blocks("eca")))
def test_fused_equals_plain_fp32(kind):
    torch.manual_seed(0)
    block, c = blocks("eca")[kind]
    compare(block, torch.randn(4, c, 10, 10), {"atol": 1e-5, "rtol": 1e-4})


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("kind", ["basic", "bottleneck_down", "inverted_residual"])
def test_fused_bf16_as_accurate_as_plain(kind):
    """In bf16 both formulations round differently (a ReLU mask can flip at y ~ 0), so each is compared
    with the fp64 result: the fused one must be about as close as the plain one."""
    torch.manual_seed(0)
    block, c = blocks("eca")[kind]
    x = torch.randn(4, c, 8, 8)
    ref = run(copy.deepcopy(block).double(), x.double())
    fused = run(copy.deepcopy(block).to(torch.bfloat16), x.to(torch.bfloat16))
    plain = run(set_fused(copy.deepcopy(block), False).to(torch.bfloat16), x.to(torch.bfloat16))
    for name, r, f, p in [("output", ref[0], fused[0], plain[0]), ("input grad", ref[1], fused[1], plain[1])]:
        assert rel_err(f, r) <= max(2 * rel_err(p, r), 2e-2), name
    for r, f, p in zip(ref[2], fused[2], plain[2]):
        assert rel_err(f, r) <= max(2 * rel_err(p, r), 5e-2)


def test_eca_residual_function_against_reference():
    torch.manual_seed(0)
    eca = ECA(32, 5, gate="hard_sigmoid").double()
    nn.init.normal_(eca.conv.weight)
    for identity_shape, relu in [((2, 32, 6, 7), True), (None, False), ((2, 32, 6, 7), False)]:
        x = torch.randn(2, 32, 6, 7, dtype=torch.float64, requires_grad=True)
        idt = None if identity_shape is None else torch.randn(identity_shape, dtype=torch.float64, requires_grad=True)
        ref = eca(x) + (0 if idt is None else idt)
        ref = ref.relu() if relu else ref
        got = eca_residual(eca, x * 1.0, idt, relu=relu)  # x * 1.0: a fresh tensor the function may overwrite
        torch.testing.assert_close(got, ref)
        g = torch.randn_like(ref)
        inputs = [x, eca.conv.weight] + ([idt] if idt is not None else [])
        for a, b in zip(torch.autograd.grad(got, inputs, g), torch.autograd.grad(ref, inputs, g)):
            torch.testing.assert_close(a, b)


def test_gradcheck_fused_function():
    torch.manual_seed(0)
    eca = ECA(8, 3).double()
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    idt = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: eca_residual(eca, a * 1.0, b), (x, idt))


def test_inference_path_equals_plain_and_works_in_place():
    torch.manual_seed(0)
    model = create_model("eca_resnet18").eval()
    plain = set_fused(copy.deepcopy(model), False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), plain(x))


def saved_bytes(block, x):
    """Bytes of the distinct storages autograd keeps for backward."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x)
    return sum(storages.values())


def test_fused_keeps_no_extra_full_size_activation():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    fused = BasicBlock(64, 64, attn="eca", kernel_size=3)
    plain = set_fused(copy.deepcopy(fused), False)
    none = BasicBlock(64, 64)
    full = x.numel() * x.element_size()
    # the plain gate keeps the pre-gate tensor x for the product's backward; the fused step does not
    assert saved_bytes(plain, x) - saved_bytes(none, x) >= full
    assert saved_bytes(fused, x) - saved_bytes(none, x) < full


@pytest.mark.parametrize("kind", ["basic", "bottleneck_down", "inverted_residual", "inverted_no_shortcut"])
def test_fused_under_torch_compile(kind):
    torch.manual_seed(0)
    block, c = blocks("eca")[kind]
    plain = set_fused(copy.deepcopy(block), False)
    compiled = torch.compile(block)
    x = torch.randn(2, c, 8, 8)
    (y1, gx1, gp1), (y2, gx2, gp2) = run(compiled, x), run(plain, x)
    torch.testing.assert_close(y1, y2, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(gx1, gx2, atol=1e-4, rtol=1e-3)
    for a, b in zip(gp1, gp2):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
