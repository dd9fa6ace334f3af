"""Training and inference on a CUDA GPU against a CPU fp64 reference: every zoo family x attention in fp32,
bf16 and fp16 autocast (with a gradient scaler), channels_last and eval; torch.compile; the CLI end to end;
a detector's and a segmenter's training step; ONNX export; two-process NCCL DDP. Each runs only where a GPU
is (conftest.py); none is reachable on the CPU-only CI."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from ecanet import create_model, load_checkpoint

FAMILIES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2", "resnet20"]
ATTENTIONS = ["", "se_", "cbam_", "eca_", "ceca_", "eca_ns_"]
# Relative error of the output, the gradients and the running statistics against fp64, per mode: fp32 with
# TF32 off; bf16 keeps 8 bits of mantissa, fp16 11.
MODES = {
    "fp32": (None, 1e-4),
    "bf16": (torch.bfloat16, 6e-2),
    "fp16": (torch.float16, 1e-2),
    "channels_last": (None, 1e-4),
    "eval": (None, 1e-4),
}


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 off for the comparisons (the training default turns it on: docs/training.md, "On a GPU")."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def rel_err(a, b):
    b = b.double().cpu()
    return ((a.double().cpu() - b).norm() / b.norm().clamp_min(1e-12)).item()


def one_step(model, x, target, dtype=None, scaler=None):
    """Forward, loss and backward (with the scaler where given); returns the output and the gradients."""
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        out = model(x)
        loss = nn.functional.cross_entropy(out.float(), target)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    grads = [p.grad / (scaler.get_scale() if scaler is not None else 1.0) for p in model.parameters()]
    return out.detach(), grads


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("attn", ATTENTIONS, ids=lambda a: a.rstrip("_") or "none")
@pytest.mark.parametrize("family", FAMILIES)
def test_zoo_trains_a_step_on_cuda_like_fp64_on_cpu(family, attn, mode):
    dtype, tol = MODES[mode]
    torch.manual_seed(0)
    model = create_model(attn + family, num_classes=10).train(mode != "eval")
    size = 32 if family == "resnet20" else 64
    x, target = torch.randn(4, 3, size, size), torch.randint(0, 10, (4,))
    reference = copy.deepcopy(model).double()
    ref_out, ref_grads = one_step(reference, x.double(), target)
    gpu = model.cuda()
    xg = x.cuda()
    if mode == "channels_last":
        gpu, xg = gpu.to(memory_format=torch.channels_last), xg.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    out, grads = one_step(gpu, xg, target.cuda(), dtype, scaler)
    assert out.is_cuda and rel_err(out, ref_out) <= tol
    # all gradients together: a near-zero gradient's own relative error says nothing about the step
    flat = torch.cat([g.flatten().double().cpu() for g in grads])
    assert rel_err(flat, torch.cat([g.flatten() for g in ref_grads])) <= 2 * tol
    for (name, a), b in zip(gpu.named_buffers(), reference.buffers()):
        if a.is_floating_point():
            assert rel_err(a, b) <= tol, name  # running statistics updated as on the CPU


def test_compiled_eca_resnet50_equals_eager():
    torch.manual_seed(0)
    model = create_model("eca_resnet50").cuda().eval()
    x = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    assert rel_err(compiled, eager) <= 1e-4


def test_train_cli_on_cuda_end_to_end(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--device", "cuda", "--epochs", "2", "--amp", "--channels-last", "--output", str(out)]
    done = subprocess.run([sys.executable, "-m", "ecanet", *argv, "--compare"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert load_checkpoint(out / "final.safetensors").state_dict()


def test_detector_and_segmenter_train_a_step_on_cuda():
    from ecanet.detection import create_detector
    from ecanet.segmentation import create_segmenter

    torch.manual_seed(0)
    detector = create_detector("faster_rcnn", "eca_resnet50", num_classes=3, min_size=128, max_size=128).cuda()
    images = [torch.rand(3, 128, 128, device="cuda") for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]], device="cuda"), "labels": torch.tensor([1], device="cuda")}
        for _ in images
    ]
    losses = detector(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    segmenter = create_segmenter("deeplabv3", "eca_resnet50", num_classes=3).cuda()
    out = segmenter(torch.randn(2, 3, 64, 64, device="cuda"))["out"]
    nn.functional.cross_entropy(out, torch.randint(0, 3, (2, 64, 64), device="cuda")).backward()
    assert out.shape == (2, 3, 64, 64)


def test_onnx_export_of_a_cuda_model(tmp_path):
    pytest.importorskip("onnxruntime", reason='needs the "export" extra')
    from ecanet.export import export_model

    model = create_model("eca_resnet20").cuda()
    result = export_model(model, tmp_path / "m.onnx", image_size=32)  # traced on the GPU, checked against it
    assert result["max_abs_diff"] <= 1e-4 and next(model.parameters()).is_cuda


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_nccl_ddp_two_processes_equal_one(tmp_path):
    common = ["--model", "eca_resnet20", "--image-size", "16", "--workers", "0", "--lr", "0.05", "--compare"]
    common += ["--epochs", "2", "--no-augment", "--freeze-bn", "--no-tf32", "--no-cudnn-benchmark"]
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    cmd = [sys.executable, "-m", "ecanet", "train", *common, "--device", "cuda"]
    subprocess.run([*cmd, "--batch-size", "8", "--output", str(one)], check=True, env=env)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launch, "-m", "ecanet", "train", *common, "--device", "cuda", "--batch-size", "4", "--output", str(two)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = (load_checkpoint(d / "final.safetensors").state_dict() for d in (one, two))
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-3, msg=key)
