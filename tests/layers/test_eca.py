import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from ecanet import CBAM, ECA, SE, create_attention, eca_kernel_size
from tests.helpers import require_extra


def paper_kernel_size(c: int, gamma: float = 2, b: float = 1) -> int:
    # psi(C) = |log2(C)/gamma + b/gamma|_odd, written from the paper's Eq. 9
    t = int(abs(math.log(c, 2) / gamma + b / gamma))
    return t if t % 2 == 1 else t + 1


def test_kernel_size_rule_matches_formula_for_16_to_4096_channels():
    for c in range(16, 4097):
        assert eca_kernel_size(c) == paper_kernel_size(c), c


def test_kernel_size_known_values_and_no_clamp():
    assert [eca_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 5, 7]
    assert eca_kernel_size(4) == 1  # the paper's rule has no minimum of 3
    assert eca_kernel_size(64, gamma=1, beta=0) == 7


def naive_eca(x, weight, circular=False, shared=True):
    """Per-channel loop: y_c = sigma(sum_j w_j * mean(x_{c+j-p})) scales channel c."""
    n, c = x.shape[:2]
    gate = naive_gate(x.mean(dim=tuple(range(2, x.ndim))), weight, circular, shared)
    return x * gate.view(n, c, *([1] * (x.ndim - 2)))


def naive_gate(pooled, weight, circular=False, shared=True):
    """The weights sigma(sum_j w_j * pooled_{c+j-p}) of every channel c, one channel at a time."""
    n, c = pooled.shape
    k = weight.shape[-1]
    p = (k - 1) // 2
    out = torch.empty(n, c, dtype=pooled.dtype)
    for ch in range(c):
        w = weight[0, 0] if shared else weight[ch, 0]
        acc = torch.zeros(n, dtype=pooled.dtype)
        for j in range(k):
            src = ch + j - p
            if circular:
                src %= c
            elif not 0 <= src < c:
                continue
            acc = acc + w[j] * pooled[:, src]
        out[:, ch] = torch.sigmoid(acc)
    return out


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("batch,kernel_size", [(1, 3), (1, 5), (3, 1), (3, 5)])
@pytest.mark.parametrize("grad", [True, False])
def test_eca_matches_naive_loop(padding, shared, batch, kernel_size, grad):
    torch.manual_seed(0)
    eca = ECA(12, kernel_size=kernel_size, padding=padding, shared=shared).double()
    torch.nn.init.normal_(eca.conv.weight)
    x = torch.randn(batch, 12, 4, 5, dtype=torch.float64)
    x_before = x.clone()
    expected = naive_eca(x, eca.conv.weight.detach(), circular=padding == "circular", shared=shared)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(eca(x), expected)
    assert torch.equal(x, x_before)


def test_kernels_passed_in_are_used_for_their_call_only():
    """torch.func: a kernel passed in (functional_call, batched by vmap) serves its call; the module's own
    kernel serves the calls around it."""
    torch.manual_seed(0)
    eca = ECA(12, kernel_size=3).double()
    x = torch.randn(4, 12, 3, 3, dtype=torch.float64)
    kernels = torch.randn(2, *eca.conv.weight.shape, dtype=torch.float64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback of torch.func's without a batching rule
        torch.testing.assert_close(eca(x), naive_eca(x, eca.conv.weight))
        got = torch.func.vmap(lambda w: torch.func.functional_call(eca, {"conv.weight": w}, (x,)))(kernels)
        for kernel, y in zip(kernels, got, strict=True):
            torch.testing.assert_close(y, naive_eca(x, kernel))
        torch.testing.assert_close(eca(x), naive_eca(x, eca.conv.weight))


@pytest.mark.slow
@pytest.mark.parametrize("padding,shared", [("zeros", True), ("circular", False)])
def test_compiled_gate_matches_naive_loop_and_eager_gradients(padding, shared):
    """Under torch.compile the gate and its gradients are the eager ones."""
    torch.manual_seed(0)
    eca = ECA(12, kernel_size=5, padding=padding, shared=shared).double()
    torch.nn.init.normal_(eca.conv.weight)
    x = torch.randn(3, 12, 4, 5, dtype=torch.float64, requires_grad=True)
    expected = naive_eca(x.detach(), eca.conv.weight.detach(), circular=padding == "circular", shared=shared)
    got = torch.compile(eca, fullgraph=True)(x)
    torch.testing.assert_close(got, expected)
    g = torch.randn_like(got)
    compiled_grads = torch.autograd.grad(got, [x, eca.conv.weight], g)
    for a, b in zip(compiled_grads, torch.autograd.grad(eca(x), [x, eca.conv.weight], g)):
        torch.testing.assert_close(a, b)


def test_the_gate_is_the_modules_own_convolution():
    """One computation everywhere: a hook on ``eca.conv`` sees the pooled channel vector, and PyTorch's FLOP
    counter counts the 1-D convolution (2 * k multiply-adds per channel and sample)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    eca = ECA(16, kernel_size=5)
    x = torch.randn(3, 16, 4, 4)
    seen = []
    eca.conv.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with FlopCounterMode(display=False) as counter:
        eca(x)
    torch.testing.assert_close(seen[0], x.mean((2, 3)).unsqueeze(1))
    assert counter.get_total_flops() == 2 * 5 * 16 * 3


def test_circular_differs_from_zero_padding_only_at_the_ends():
    torch.manual_seed(0)
    zeros, circ = ECA(16, 3), ECA(16, 3, padding="circular")
    circ.load_state_dict(zeros.state_dict())
    x = torch.randn(2, 16, 3, 3)
    a, b = zeros.attention(x), circ.attention(x)
    torch.testing.assert_close(a[:, 1:-1], b[:, 1:-1])
    assert not torch.allclose(a[:, [0, -1]], b[:, [0, -1]])


def test_eca_ns_has_one_kernel_per_channel():
    eca = ECA(32, 3, shared=False)
    assert eca.conv.weight.shape == (32, 1, 3)
    assert ECA(32, 3).conv.weight.shape == (1, 1, 3)


@pytest.mark.parametrize("shape", [(2, 8, 7), (2, 8, 5, 6), (2, 8, 3, 4, 5)])
def test_eca_shapes_and_gradient(shape):
    eca = ECA(8, 3).double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert eca(x).shape == x.shape
    assert torch.autograd.gradcheck(eca, (x,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_eca_low_precision_matches_fp32(dtype):
    torch.manual_seed(0)
    eca = ECA(64)
    x = torch.randn(2, 64, 6, 6)
    expected = eca(x)
    got = eca.to(dtype)(x.to(dtype))
    assert got.dtype == dtype
    # Values of order 1, each a product of a rounded input and a rounded gate: a few units of the dtype's
    # rounding (measured over 20 seeds: at most 1.6 eps for fp16, 2.2 eps for bf16).
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(got.float(), expected, atol=3 * eps, rtol=eps)


def test_eca_channels_last_keeps_layout_and_values():
    torch.manual_seed(0)
    eca = ECA(32)
    x = torch.randn(2, 32, 5, 5)
    y = eca(x.to(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, eca(x))


def test_eca_gate_in_unit_interval_and_no_bias():
    eca = ECA(64)
    assert eca.conv.bias is None
    w = eca.attention(torch.randn(4, 64, 3, 3))
    assert w.shape == (4, 64) and (w > 0).all() and (w < 1).all()


@pytest.mark.parametrize("grad", [True, False])
def test_hard_sigmoid_gate(grad):
    eca = ECA(16, 3, gate="hard_sigmoid")
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        expected = F.hardsigmoid(eca.conv(x.mean((2, 3)).unsqueeze(1)).squeeze(1))
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(eca.attention(x), expected)


def test_wrong_channel_count_names_both_numbers():
    with pytest.raises(ValueError, match="input has 16 channels.*built for 32"):
        ECA(32)(torch.randn(1, 16, 4, 4))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "give channels"),
        ({"channels": 8, "kernel_size": 4}, "positive odd"),
        ({"channels": 8, "padding": "reflect"}, "padding must be"),
        ({"kernel_size": 3, "shared": False}, "needs channels"),
        ({"channels": 8, "gate": "tanh"}, "gate must be"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ECA(**kwargs)


def test_se_and_cbam_follow_their_papers():
    se = SE(64)
    assert (se.fc1.in_features, se.fc1.out_features) == (64, 4)  # reduction 16
    cbam = CBAM(64)
    assert cbam.spatial_conv.kernel_size == (7, 7)
    x = torch.randn(2, 64, 6, 6)
    pooled = x.mean((2, 3))
    expected = x * torch.sigmoid(se.fc2(torch.relu(se.fc1(pooled))))[:, :, None, None]
    torch.testing.assert_close(se(x), expected)


def test_cbam_equals_its_papers_formula_written_out():
    """Woo et al., Eq. 2-3: channel attention sigma(MLP(avg) + MLP(max)), then spatial attention
    sigma(BN(conv7x7([mean_c; max_c]))), each multiplied in."""
    torch.manual_seed(0)
    cbam = CBAM(32).double().eval()
    with torch.no_grad():
        cbam.spatial_bn.running_mean.fill_(0.3)
        cbam.spatial_bn.running_var.fill_(2.0)
        cbam.spatial_bn.weight.fill_(1.5)
        cbam.spatial_bn.bias.fill_(-0.2)
    x = torch.randn(2, 32, 7, 7, dtype=torch.float64)
    fc1, fc2 = cbam.channel_mlp[0], cbam.channel_mlp[2]

    def mlp(v):
        return torch.relu(v @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias

    channel = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    x1 = x * channel[:, :, None, None]
    maps = torch.stack([x1.mean(1), x1.amax(1)], 1)
    conv = torch.nn.functional.conv2d(maps, cbam.spatial_conv.weight, padding=3)
    bn = (conv - 0.3) / (2.0 + cbam.spatial_bn.eps) ** 0.5 * 1.5 - 0.2
    with torch.no_grad():
        torch.testing.assert_close(cbam(x), x1 * torch.sigmoid(bn), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(cbam.attention(x), channel, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("circular", [False, True])
def test_eca_equals_timms_modules_with_copied_weights(k, circular):
    """An independent implementation: timm's EcaModule / CecaModule (k given, so timm's clamp of the
    adaptive size does not enter), same kernel, fp64, values and input gradients."""
    require_extra("timm")
    import timm.layers as layers

    torch.manual_seed(k)
    reference = (layers.CecaModule if circular else layers.EcaModule)(kernel_size=k).double()
    ours = ECA(24, k, padding="circular" if circular else "zeros").double()
    with torch.no_grad():
        ours.conv.weight.copy_(reference.conv.weight)
    x = torch.randn(3, 24, 5, 4, dtype=torch.float64, requires_grad=True)
    expected, got = reference(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(expected)
    (grad_ref,) = torch.autograd.grad(expected, x, g)
    (grad_ours,) = torch.autograd.grad(got, x, g)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-12, atol=1e-12)


def test_factory_by_name():
    assert create_attention(None, 64) is None
    assert isinstance(create_attention("eca", 64), ECA)
    assert create_attention("ceca", 64).padding == "circular"
    assert not create_attention("eca_ns", 64).shared
    assert isinstance(create_attention("se", 64), SE)
    assert create_attention("eca", 64, 7).kernel_size == 7
    with pytest.raises(ValueError, match="unknown attention 'foo'"):
        create_attention("foo", 64)
