import copy

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ecanet import CBAM, ECA, SE, create_model
from ecanet.layers import fused_tail
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


def assert_close_to_scale(a, b, rtol):
    """Equal up to rtol times b's largest magnitude: rounding differences of a reordered sum are relative to
    the size of the terms, not of each (possibly near-zero) result."""
    assert (a - b).abs().max() <= rtol * b.abs().max(), f"{(a - b).abs().max()} > {rtol} * {b.abs().max()}"


def compare(fused_block, x, rtol):
    plain_block = set_fused(copy.deepcopy(fused_block), False)
    assert fused_block.fused and not plain_block.fused
    (y1, gx1, gp1), (y2, gx2, gp2) = run(fused_block, x), run(plain_block, x)
    assert len(gp1) == len(gp2)
    for a, b in [(y1, y2), (gx1, gx2), *zip(gp1, gp2)]:
        assert_close_to_scale(a, b, rtol)
    return plain_block


ATTENTIONS = [None, "eca", "ceca", "eca_ns", "se", "cbam"]


@pytest.mark.parametrize("attn", ATTENTIONS)
@pytest.mark.parametrize("kind", list(blocks("eca")))
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_equals_plain_fp64(attn, kind, channels_last):
    torch.manual_seed(0)
    block, c = blocks(attn)[kind]
    block = block.double()
    x = torch.randn(3, c, 8, 8, dtype=torch.float64)
    if channels_last:
        block, x = block.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    compare(block, x, 1e-10)


def rel_err(a, b):
    """||a - b|| / ||b||, or ||a - b|| where b is exactly zero (a gradient that vanishes: an SE's one hidden
    unit behind a ReLU that is off for every sample)."""
    scale = b.double().norm().item()
    return (a.double() - b.double()).norm().item() / (scale or 1.0)


@pytest.mark.parametrize("attn", [None, "eca", "se", "cbam"])
@pytest.mark.parametrize(
    "dtype,kind",
    [(torch.float32, kind) for kind in blocks("eca")]
    + [(torch.bfloat16, kind) for kind in ["basic", "bottleneck_down", "inverted_residual"]],
)
def test_fused_as_accurate_as_plain(attn, dtype, kind):
    """Below fp64 both formulations round differently (in bf16 a ReLU mask can even flip at y ~ 0), so each
    is compared with the fp64 result: the fused one must be about as close as the plain one."""
    torch.manual_seed(0)
    block, c = blocks(attn)[kind]
    x = torch.randn(4, c, 8, 8)
    floor = 1e-5 if dtype == torch.float32 else 2e-2
    ref = run(copy.deepcopy(block).double(), x.double())
    fused = run(copy.deepcopy(block).to(dtype), x.to(dtype))
    plain = run(set_fused(copy.deepcopy(block), False).to(dtype), x.to(dtype))
    for name, r, f, p in [("output", ref[0], fused[0], plain[0]), ("input grad", ref[1], fused[1], plain[1])]:
        assert rel_err(f, r) <= max(2 * rel_err(p, r), floor), name
    for r, f, p in zip(ref[2], fused[2], plain[2]):
        assert rel_err(f, r) <= max(2 * rel_err(p, r), 2.5 * floor)


@pytest.mark.parametrize("attn", [None, "eca", "se"])
@pytest.mark.parametrize("kind", ["basic", "bottleneck_down", "inverted_residual", "inverted_no_shortcut"])
@pytest.mark.parametrize("size", [7, 16])
def test_bf16_inference_as_accurate_as_plain(attn, kind, size):
    """Eager bf16 inference takes BatchNorm's kernel for the block's affine map (fp32 coefficients, bf16
    maps): as close to the fp64 result as the plain formulation."""
    torch.manual_seed(0)
    block, c = blocks(attn)[kind]
    for m in block.modules():  # running statistics that are not the identity map
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.running_mean)
            nn.init.uniform_(m.running_var, 0.5, 2.0)
    block.eval()
    x = torch.randn(4, c, size, size)
    with torch.no_grad():
        ref = copy.deepcopy(block).double()(x.double())
        fused = copy.deepcopy(block).bfloat16()(x.bfloat16())
        plain = set_fused(copy.deepcopy(block), False).bfloat16()(x.bfloat16())
    assert fused.dtype == torch.bfloat16
    assert rel_err(fused, ref) <= max(2 * rel_err(plain, ref), 1e-2)


@pytest.mark.parametrize("kind", ["eval", "no_affine", "frozen"])
@pytest.mark.parametrize("inplace", [False, True])
def test_bf16_inference_without_gate_equals_batchnorm(kind, inplace):
    """Without a gate, eager bf16 inference is BatchNorm's own kernel with the norm's statistics (frozen
    BatchNorm too), then the addition and ReLU: BatchNorm's result in fp64, to bf16's precision, written into
    x itself when asked."""
    norm = random_norm(kind).eval()
    x, identity = torch.randn(2, 32, 5, 5).bfloat16(), torch.randn(2, 32, 5, 5).bfloat16()
    ref = torch.relu(norm(x.double()) + identity.double())
    given = x.clone()
    with torch.no_grad():
        y = fused_tail(None, norm.float(), given, identity, inplace=inplace)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), ref, rtol=2e-2, atol=2e-2)
    assert (y.data_ptr() == given.data_ptr()) == inplace


NORMS = {
    "train": lambda: nn.BatchNorm2d(32),
    "eval": lambda: nn.BatchNorm2d(32).eval(),
    "no_affine": lambda: nn.BatchNorm2d(32, affine=False),
    "cumulative_average": lambda: nn.BatchNorm2d(32, momentum=None),
    "no_running_stats": lambda: nn.BatchNorm2d(32, track_running_stats=False),
    "no_running_stats_eval": lambda: nn.BatchNorm2d(32, track_running_stats=False).eval(),
    "frozen": lambda: FrozenBatchNorm2d(32),
}


def random_norm(kind):
    norm = NORMS[kind]().double()
    for name, t in [*norm.named_parameters(), *norm.named_buffers()]:
        if name in ("weight", "bias", "running_mean"):
            nn.init.normal_(t)
        elif name == "running_var":
            nn.init.uniform_(t, 0.5, 2.0)
    return norm


def random_attention(kind):
    """An attention module for 32 channels with weights far from their initialisation (or None)."""
    attention = {
        None: lambda: None,
        "eca": lambda: ECA(32, 5, gate="hard_sigmoid"),
        "se": lambda: SE(32),
        "cbam": lambda: CBAM(32),
    }[kind]()
    if attention is not None:
        attention.double()
        for p in attention.parameters():
            nn.init.normal_(p, std=0.5)
    return attention


def reference_tail(attention, norm, x, identity, relu):
    """The modules one after the other: act(attention(norm(x)) + identity)."""
    y = norm(x)
    y = y if attention is None else attention(y)
    y = y + (0 if identity is None else identity)
    return y.relu() if relu else y


def buffers(*modules):
    return [b for m in modules if m is not None for b in m.buffers()]


def parameters(*modules):
    return [p for m in modules if m is not None for p in m.parameters()]


@pytest.fixture(params=["small", "flat_view"])
def tensor_path(request, monkeypatch):
    """Both paths of ``scale_shift``: plain operations for small tensors, BatchNorm's kernel over the flat
    view for larger ones (forced here by a zero size limit)."""
    if request.param == "flat_view":
        monkeypatch.setattr("ecanet.layers.fused.kernels.SMALL_TENSOR", 0)
    return request.param


@pytest.mark.parametrize("attn", [None, "eca", "se", "cbam"])
@pytest.mark.parametrize("norm_kind", list(NORMS))
@pytest.mark.parametrize("identity,relu", [(True, True), (False, False), (True, False)])
def test_fused_tail_against_reference(attn, norm_kind, identity, relu, tensor_path):
    """act(attention(norm(x)) + identity) against the modules run one after the other: output, every
    gradient, and the running statistics of the norm (and of CBAM's own BatchNorm)."""
    torch.manual_seed(0)
    attention, norm = random_attention(attn), random_norm(norm_kind)
    ref_attention, ref_norm = copy.deepcopy(attention), copy.deepcopy(norm)
    x = (torch.randn(2, 32, 6, 7, dtype=torch.float64) * 3 + 2).requires_grad_()
    idt = torch.randn(2, 32, 6, 7, dtype=torch.float64, requires_grad=True) if identity else None
    ref = reference_tail(ref_attention, ref_norm, x, idt, relu)
    got = fused_tail(attention, norm, x, idt, relu=relu)
    torch.testing.assert_close(got, ref)
    for a, b in zip(buffers(norm, attention), buffers(ref_norm, ref_attention), strict=True):
        torch.testing.assert_close(a, b)
    g = torch.randn_like(ref)
    inputs = [x] + ([idt] if identity else [])
    got_grads = torch.autograd.grad(got, inputs + parameters(attention, norm), g)
    ref_grads = torch.autograd.grad(ref, inputs + parameters(ref_attention, ref_norm), g)
    assert len(got_grads) == len(ref_grads)
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("offset", [0.0, 300.0])
def test_batch_statistics_as_accurate_as_batchnorm_far_from_zero(offset):
    """The fused step's batch variance, sum(x * (x - mean)) / count, loses digits as mean / std grows:
    channels 300 std away from zero must still get BatchNorm's fp32 accuracy against fp64 (the running
    variance within 2x its error; the output, an affine map per (sample, channel) with BatchNorm's
    x * scale + shift rounding, within 3x; without the two-pass fallback it was 150x)."""
    torch.manual_seed(0)
    x = torch.randn(4, 16, 8, 8)
    x[:, ::2] += offset
    bn, eca = nn.BatchNorm2d(16), ECA(16, 3)
    plain_bn, ref_bn, ref_eca = copy.deepcopy(bn), copy.deepcopy(bn).double(), copy.deepcopy(eca).double()
    got = fused_tail(eca, bn, x.clone().requires_grad_())
    plain = eca(plain_bn(x)).relu()
    ref = ref_eca(ref_bn(x.double())).relu()
    assert rel_err(got, ref) <= max(3 * rel_err(plain, ref), 1e-6)
    var, plain_var, ref_var = bn.running_var, plain_bn.running_var, ref_bn.running_var
    assert rel_err(var, ref_var) <= max(2 * rel_err(plain_var, ref_var), 1e-6)


@pytest.mark.parametrize("attn", [None, "eca", "se", "cbam"])
@pytest.mark.parametrize("norm_kind", list(NORMS))
@pytest.mark.parametrize("identity,relu", [(True, True), (False, False)])
@pytest.mark.parametrize("inplace", [False, True])
def test_fused_tail_without_grad_against_reference(attn, norm_kind, identity, relu, inplace, tensor_path):
    """Without autograd (inference) the tail never makes BatchNorm's output (for a channel gate or none it
    is one affine map per sample and channel): the modules' output and running statistics; x is overwritten
    only when asked, the shortcut never."""
    torch.manual_seed(0)
    attention, norm = random_attention(attn), random_norm(norm_kind)
    ref_attention, ref_norm = copy.deepcopy(attention), copy.deepcopy(norm)
    x = torch.randn(2, 32, 6, 7, dtype=torch.float64) * 3 + 2
    idt = torch.randn_like(x) if identity else None
    x_before, idt_before = x.clone(), None if idt is None else idt.clone()
    with torch.no_grad():
        ref = reference_tail(ref_attention, ref_norm, x, idt, relu)
        got = fused_tail(attention, norm, x, idt, relu=relu, inplace=inplace)
    torch.testing.assert_close(got, ref)
    for a, b in zip(buffers(norm, attention), buffers(ref_norm, ref_attention), strict=True):
        torch.testing.assert_close(a, b)
    assert (got.data_ptr() == x.data_ptr()) == inplace
    if not inplace:
        assert torch.equal(x, x_before)
    if idt is not None:
        assert torch.equal(idt, idt_before)


def test_cbam_tail_takes_the_maximum_through_a_negative_scale():
    """Without autograd CBAM's max-pooled descriptor comes from x: where BatchNorm's scale is negative the
    maximum of its output is at x's minimum."""
    torch.manual_seed(0)
    cbam, norm = random_attention("cbam").eval(), random_norm("eval")
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-2, 2, 32, dtype=torch.float64))
        x = torch.randn(2, 32, 5, 5, dtype=torch.float64)
        torch.testing.assert_close(fused_tail(cbam, norm, x, relu=False), cbam(norm(x)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "attn,norm_kind",
    [("eca", kind) for kind in ["train", "eval", "cumulative_average", "no_running_stats", "frozen"]]
    + [(attn, kind) for attn in [None, "se", "cbam"] for kind in ["train", "eval", "frozen"]],
)
def test_compiled_formulation_against_reference(attn, norm_kind):
    """Under torch.compile the fused tail is written as plain operations (for a channel gate: one
    statistics reduction and one pointwise step); it must give the modules' output, gradients and running
    statistics too."""
    torch._dynamo.reset()  # a fresh recompile budget: every case compiles the same function anew
    torch.manual_seed(0)
    attention, norm = random_attention(attn), random_norm(norm_kind)
    attention, norm = attention and attention.float(), norm.float()
    ref_attention, ref_norm = copy.deepcopy(attention), copy.deepcopy(norm)
    x = (torch.randn(2, 32, 6, 7) * 3 + 2).requires_grad_()
    idt = torch.randn(2, 32, 6, 7, requires_grad=True)
    compiled = torch.compile(lambda a, b: fused_tail(attention, norm, a, b), fullgraph=True)
    got, ref = compiled(x, idt), reference_tail(ref_attention, ref_norm, x, idt, True)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    for a, b in zip(buffers(norm, attention), buffers(ref_norm, ref_attention), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    g = torch.randn_like(ref)
    inputs = [x, idt]
    for a, b in zip(
        torch.autograd.grad(got, inputs + parameters(attention, norm), g),
        torch.autograd.grad(ref, inputs + parameters(ref_attention, ref_norm), g),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("attention", [None, ECA(8, 3), SE(8, reduction=4)], ids=["none", "eca", "se"])
def test_gradcheck_fused_functions(attention):
    torch.manual_seed(0)
    attention = attention and attention.double()
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    idt = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    norm = nn.BatchNorm2d(8).double()
    nn.init.normal_(norm.weight)
    assert torch.autograd.gradcheck(lambda a, b, w: fused_tail(attention, norm, a, b), (x, idt, norm.weight))


def test_unfusable_norm_is_refused_and_blocks_fall_back_to_plain():
    eca = ECA(8, 3)
    with pytest.raises(TypeError, match="GroupNorm"):
        fused_tail(eca, nn.GroupNorm(2, 8), torch.randn(2, 8, 4, 4, requires_grad=True))
    torch.manual_seed(0)
    block = BasicBlock(8, 8, attn="eca", kernel_size=3)
    block.bn2 = nn.GroupNorm(2, 8)
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(block(x), set_fused(copy.deepcopy(block), False)(x))


@pytest.mark.parametrize(
    "name",
    ["eca_resnet18", "eca_resnet50", "eca_mobilenet_v2", "resnet50", "mobilenet_v2", "se_resnet50", "cbam_resnet18"],
)
def test_inference_path_equals_plain_and_works_in_place(name):
    """The blocks write the step into their convolution's output. In fp32 the two formulations round apart,
    and by how much depends on the CPU's vector paths: each is compared with the fp64 result, the fused one
    no further from it than twice the plain one (or 1e-6 of the logits' size)."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    for m in model.modules():  # running statistics that are not the identity map
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.running_mean, -0.5, 0.5)
            nn.init.uniform_(m.running_var, 0.5, 2.0)
    plain = set_fused(copy.deepcopy(model), False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = copy.deepcopy(plain).double()(x.double())
        plain_err = rel_err(plain(x), ref)
        assert rel_err(model(x), ref) <= max(2 * plain_err, 1e-6)
    with torch.inference_mode():
        assert rel_err(model(x), ref) <= max(2 * plain_err, 1e-6)


def test_inference_under_bf16_autocast_as_accurate_as_plain():
    torch.manual_seed(0)
    model = create_model("eca_resnet50").eval()
    plain = set_fused(copy.deepcopy(model), False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = copy.deepcopy(plain).double()(x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fused_out, plain_out = model(x), plain(x)
    assert fused_out.dtype == plain_out.dtype == torch.bfloat16
    assert rel_err(fused_out, ref) <= max(2 * rel_err(plain_out, ref), 2e-2)


@pytest.mark.parametrize("attn", ATTENTIONS)
@pytest.mark.parametrize("kind", ["basic", "bottleneck_down", "inverted_residual"])
@pytest.mark.parametrize("size", [8, 24])
def test_training_under_bf16_autocast_as_accurate_as_plain(attn, kind, size):
    """Under CPU autocast the convolutions give bf16 tensors to float32 norms and gates (and the block's
    input is a bf16 tensor, the previous block's output): the fused training step's output and gradients
    must be about as close to fp64 as the plain formulation's (24 x 24 maps: the batch statistics' one read
    of a bf16 map, from 512 positions on)."""
    torch.manual_seed(0)
    block, c = blocks(attn)[kind]
    x = torch.randn(4, c, size, size).bfloat16()
    ref = run(copy.deepcopy(block).double(), x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = run(copy.deepcopy(block), x)
        plain = run(set_fused(copy.deepcopy(block), False), x)
    assert fused[0].dtype == plain[0].dtype
    for r, f, p in [(ref[0], fused[0], plain[0]), (ref[1], fused[1], plain[1]), *zip(ref[2], fused[2], plain[2])]:
        assert rel_err(f, r) <= max(2 * rel_err(p, r), 2e-2)


def saved_bytes(block, x):
    """Bytes of the distinct storages autograd keeps for backward."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x)
    return sum(storages.values())


@pytest.mark.parametrize("kind", ["basic", "bottleneck_down"])
def test_fused_keeps_no_more_than_resnet(kind):
    """The fused block keeps what the block without attention keeps, plus per-channel vectors; the plain
    gate also keeps the pre-gate tensor (and, downsampling, the shortcut tensor)."""
    torch.manual_seed(0)
    fused, c = blocks("eca")[kind]
    plain = set_fused(copy.deepcopy(fused), False)
    none = blocks(None)[kind][0]
    x = torch.randn(2, c, 32, 32, requires_grad=True)
    full = none(x).numel() * x.element_size()  # one block-output tensor
    assert saved_bytes(plain, x) - saved_bytes(none, x) >= full
    assert saved_bytes(fused, x) - saved_bytes(none, x) < full / 10


@pytest.mark.parametrize(
    "attn,kind,train",
    [("eca", kind, True) for kind in ["basic", "bottleneck_down", "inverted_residual", "inverted_no_shortcut"]]
    + [("eca", "bottleneck", False)]  # eval: the pooled descriptor from conv3's input mean, autograd through it
    + [(attn, "basic", train) for attn in [None, "se", "cbam"] for train in [True, False]]
    + [(attn, "inverted_residual", True) for attn in [None, "se", "cbam"]],
)
@pytest.mark.slow
def test_fused_under_torch_compile(attn, kind, train):
    torch._dynamo.reset()
    torch.manual_seed(0)
    block, c = blocks(attn)[kind]
    block.train(train)
    plain = set_fused(copy.deepcopy(block), False)
    compiled = torch.compile(block)
    x = torch.randn(2, c, 8, 8)
    (y1, gx1, gp1), (y2, gx2, gp2) = run(compiled, x), run(plain, x)
    torch.testing.assert_close(y1, y2, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(gx1, gx2, atol=1e-4, rtol=1e-3)
    for a, b in zip(gp1, gp2):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_forward_hook_on_eca_fires_in_train_and_eval_with_the_fused_default():
    model = create_model("eca_resnet50", num_classes=10)
    assert model.layer1[0].fused
    seen = []
    eca = model.layer1[0].eca
    handle = eca.register_forward_hook(lambda m, args, out: seen.append((args[0].clone(), out.clone())))
    x = torch.randn(2, 3, 64, 64)
    for mode in (True, False):
        model.train(mode)(x)
        inp, out = seen[-1]
        torch.testing.assert_close(out, inp * eca.attention(inp)[:, :, None, None])
    handle.remove()
    assert len(seen) == 2


@pytest.mark.parametrize("channels_last", [False, True])
def test_each_kernel_equals_its_reference(channels_last, tensor_path):
    from ecanet.layers.fused.kernels import (
        REFERENCES,
        add_relu_,
        batch_norm_backward,
        channel_sums,
        global_average_pool,
        moments,
        normalize,
        relu_backward,
        scale_shift,
        variance_about,
    )

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, g, identity = (torch.randn(3, 5, 4, 6, dtype=torch.float64).to(memory_format=fmt) for _ in range(3))
    mean, mean_nc, x_centred = (torch.randn(*shape, dtype=torch.float64) for shape in [(5,), (3, 5), (3, 5)])
    a, b = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    var, x_in = torch.rand(5, dtype=torch.float64) + 0.5, x.clone()
    cases = [
        (global_average_pool, (x, torch.float64)),
        (moments, (x.contiguous(), torch.float64)),
        (variance_about, (x, mean)),
        (scale_shift, (x, a, b, torch.empty_like(x))),
        (scale_shift, (x, a[0], b[0], torch.empty_like(x))),  # per-channel coefficients
        (normalize, (x, a[0], b[0], mean, var, 1e-5, torch.empty_like(x))),
        (normalize, (x_in, None, None, mean, var, 1e-3, x_in)),  # no affine, into x itself
        (add_relu_, (x.clone(), identity)),
        (add_relu_, (x.clone(), b[:, :, None, None])),  # per-(sample, channel) shift, broadcast
        (relu_backward, (g, x)),
        (channel_sums, (g, x, mean_nc, x_centred, torch.empty_like(x))),
        (batch_norm_backward, (g, x, a[0], mean, var.rsqrt())),
        (batch_norm_backward, (g, x, None, mean, var.rsqrt())),  # no affine: no weight or bias gradient
    ]
    assert {kernel for kernel, _ in cases} == set(REFERENCES)
    for kernel, args in cases:
        ref_args = [t.clone() if isinstance(t, torch.Tensor) else t for t in args]
        torch.testing.assert_close(kernel.kernel(*args), REFERENCES[kernel](*ref_args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size", [4, 24])
def test_global_average_pool_of_bf16_maps_in_fp32(size, channels_last):
    """bf16 maps of 512 positions or more take BatchNorm's reduction over the flat view: the fp32 mean of the
    bf16 values, as the reference (a copy to fp32, then the mean)."""
    from ecanet.layers.fused.kernels import REFERENCES, global_average_pool

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 5, size, size).add_(4).bfloat16().to(memory_format=fmt)
    got = global_average_pool(x, torch.float32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, REFERENCES[global_average_pool](x, torch.float32), rtol=1e-6, atol=1e-6)


def test_fused_training_step_refuses_double_backward():
    block = Bottleneck(16, 4, attn="eca").double()
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64, requires_grad=True)
    y = block(x)
    v = torch.randn_like(y, requires_grad=True)  # a gradient that itself needs a gradient
    (grad,) = torch.autograd.grad(y, x, v, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


@pytest.mark.parametrize("name", ["resnet18", "eca_resnet18"])
def test_forward_hook_on_a_norm_makes_its_block_run_the_modules(name):
    """The fused tail does not call the block's last BatchNorm in inference; a hook on it (a user's feature
    probe, a pruning criterion) switches that block to the plain formulation, so the hook sees the norm run."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    bn = model.layer1[0].bn2
    seen = []
    bn.register_forward_hook(lambda m, args, out: seen.append((args[0].clone(), out.clone())))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
        inp, out = seen[-1]
        torch.testing.assert_close(out, bn(inp))


@pytest.mark.parametrize("name", ["resnet18", "eca_resnet18", "mobilenet_v2"])
def test_fx_feature_extraction_traces_the_plain_formulation(name):
    """torchvision's create_feature_extractor traces the model symbolically: blocks take the plain
    formulation while traced (attention modules as leaves, as docs/fast-path.md says), and the extracted
    maps equal the model's own stages."""
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    last = "layer4" if name.endswith("resnet18") else "features.18"
    leaves = {"leaf_modules": [ECA, SE, CBAM]}
    extractor = create_feature_extractor(model, return_nodes={last: "out"}, tracer_kwargs=leaves)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(extractor(x)["out"], model.forward_features(x))


def test_fused_attention_free_block_keeps_no_more_than_the_plain_one():
    torch.manual_seed(0)
    for kind in ["basic", "bottleneck_down", "inverted_residual"]:
        fused, c = blocks(None)[kind]
        plain = set_fused(copy.deepcopy(fused), False)
        x = torch.randn(2, c, 32, 32, requires_grad=True)
        assert saved_bytes(fused, x) <= saved_bytes(plain, x)


@pytest.mark.parametrize("attn", [None, "eca", "se", "cbam"])
@pytest.mark.parametrize("train", [True, False])
def test_empty_batch_takes_the_plain_formulation(attn, train):
    """An empty batch (BatchNorm's reductions would divide by a zero count and trap) runs the plain
    formulation: an empty output, and a backward that runs."""
    torch.manual_seed(0)
    block, c = blocks(attn)["basic"]
    block.train(train)
    x = torch.randn(0, c, 8, 8, requires_grad=train)
    with torch.set_grad_enabled(train):
        y = block(x)
    assert y.shape == (0, c, 8, 8)
    if train:
        y.sum().backward()
        assert x.grad.shape == x.shape
