"""The engine's GPU essentials, checked on a CPU: gradient accumulation, clipping, the schedule and the
gradient scaler, the device-side non-finite check, AMP dtypes, DDP's settings and the loop's bad input."""

import pytest
import torch
from torch import nn

from ecanet.errors import TrainingError
from ecanet.training.config import LoopConfig, default_workers
from ecanet.training.distributed import Dist, check_device
from ecanet.training.engine import Optimization, Precision, amp_dtype, train_one_epoch
from ecanet.training.fit import check_loop_config, loader_options, wrap_ddp


def mse_step(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y), {"n": len(x)}


def tiny_model():
    """No BatchNorm: micro-batches and their union give the same gradient."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2)).double()


def data(batches, size):
    gen = torch.Generator().manual_seed(1)
    xs = torch.randn(batches * size, 3, 6, 6, dtype=torch.float64, generator=gen)
    ys = torch.randn(batches * size, 2, dtype=torch.float64, generator=gen)
    return [(xs[i : i + size], ys[i : i + size]) for i in range(0, len(xs), size)]


def run_epoch(model, loader, accumulate=1, clip=None, lr_factor=None, precision=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor or (lambda i: 1.0))
    totals = train_one_epoch(
        model, loader, mse_step, opt, sched, precision or Precision("cpu"), Dist(), 0,
        optimization=Optimization(accumulate, clip),
    )  # fmt: skip
    return totals, sched


@pytest.mark.parametrize("accumulate", [2, 3])
def test_accumulated_micro_batches_equal_one_large_batch_fp64(accumulate):
    """N micro-batches of B, then a step, equal one batch of N*B in fp64: the same weights after 2 steps."""
    micro, big = tiny_model(), tiny_model()
    run_epoch(micro, data(2 * accumulate, 4), accumulate=accumulate)
    run_epoch(big, data(2, 4 * accumulate))
    for a, b in zip(micro.parameters(), big.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_last_short_group_steps_on_its_own_mean():
    """5 micro-batches with --accumulate-steps 2: groups of 2, 2 and 1, the last a step of its own."""
    micro, big = tiny_model(), tiny_model()
    run_epoch(micro, data(5, 4), accumulate=2)
    batches = data(5, 4)
    merged = [
        tuple(torch.cat(t) for t in zip(*batches[:2])),
        tuple(torch.cat(t) for t in zip(*batches[2:4])),
        batches[4],
    ]
    run_epoch(big, merged)
    for a, b in zip(micro.parameters(), big.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_schedule_advances_once_per_optimizer_step():
    _, sched = run_epoch(tiny_model(), data(6, 4), accumulate=3)
    assert sched.last_epoch == 2


def test_clip_grad_bounds_the_update():
    """With SGD (no momentum in the first step) the update is lr times the gradient, clipped to 1e-3 in norm
    (``clip_grad_norm_``'s max / (norm + 1e-6)) where unclipped it is far larger."""

    def moved(clip):
        model = tiny_model()
        before = [p.detach().clone() for p in model.parameters()]
        run_epoch(model, data(1, 4), clip=clip)
        return torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)]).norm().item()

    assert moved(None) > 0.1 * 1e-2
    assert moved(1e-3) == pytest.approx(0.1 * 1e-3, rel=1e-3)


def test_a_step_the_scaler_skips_does_not_advance_the_schedule():
    """An fp16 gradient scaler (on a CPU here) that finds an inf gradient skips the optimizer step: the weights
    stay and the schedule does not advance; the next good step moves both."""
    model = tiny_model().float()

    def step(m, batch):
        x, y = batch
        loss = nn.functional.mse_loss(m(x.float()), y.float())
        return loss, {"n": len(x)}

    poison = {"on": True}
    model[0].weight.register_hook(lambda g: g * float("inf") if poison.pop("on", False) else g)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
    before = model[3].weight.detach().clone()
    precision = Precision("cpu", scaler=scaler)
    train_one_epoch(model, data(1, 4), step, opt, sched, precision, Dist(), 0)
    assert sched.last_epoch == 0 and torch.equal(model[3].weight, before)
    train_one_epoch(model, data(1, 4), step, opt, sched, precision, Dist(), 1)
    assert sched.last_epoch == 1 and not torch.equal(model[3].weight, before)


def test_non_finite_loss_is_read_at_the_interval_and_names_its_step():
    model = tiny_model()
    batches = data(8, 2)
    batches[5] = (batches[5][0] * float("nan"), batches[5][1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingError, match=r"^non-finite loss at epoch 3, step 5$"):
        train_one_epoch(model, batches, mse_step, opt, None, Precision("cpu"), Dist(), 3)


def poisoned_loader(bad_samples, n=16, batch=2):
    """A DataLoader over n samples in order, NaN in the inputs of ``bad_samples``."""
    from torch.utils.data import DataLoader, SequentialSampler, TensorDataset

    xs, ys = (torch.cat([b[i] for b in data(n, 1)]) for i in (0, 1))
    xs[list(bad_samples)] = float("nan")
    dataset = TensorDataset(xs, ys)
    return DataLoader(dataset, batch_size=batch, sampler=SequentialSampler(dataset))


def test_non_finite_loss_names_the_batch_samples():
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingError, match=r"^non-finite loss at epoch 0, step 5; samples 10, 11$"):
        train_one_epoch(model, poisoned_loader([11]), mse_step, opt, None, Precision("cpu"), Dist(), 0)


def test_skip_nonfinite_skips_those_steps_and_no_more(caplog):
    """--skip-nonfinite 1: the bad batch's step is skipped with a warning, and the weights equal training on
    the other batches alone; a second bad batch stops the run."""
    loader = poisoned_loader([5])
    skipping, reference = tiny_model(), tiny_model()
    opt = torch.optim.SGD(skipping.parameters(), lr=0.1)
    with caplog.at_level("WARNING", logger="ecanet"):
        totals = train_one_epoch(
            skipping, loader, mse_step, opt, None, Precision("cpu"), Dist(), 0,
            optimization=Optimization(skip_nonfinite=1),
        )  # fmt: skip
    assert totals["nonfinite_skipped"] == 1
    assert "non-finite loss at epoch 0, step 2; samples 4, 5: skipped (1 of 1 allowed)" in caplog.text
    good = [b for i, b in enumerate(loader) if i != 2]
    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    train_one_epoch(reference, good, mse_step, opt, None, Precision("cpu"), Dist(), 0)
    for a, b in zip(skipping.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    opt = torch.optim.SGD(skipping.parameters(), lr=0.1)
    with pytest.raises(TrainingError, match=r"step 4; samples 8, 9: more than --skip-nonfinite 1 this epoch$"):
        train_one_epoch(
            tiny_model(), poisoned_loader([5, 9]), mse_step, opt, None, Precision("cpu"), Dist(), 0,
            optimization=Optimization(skip_nonfinite=1),
        )  # fmt: skip


@pytest.mark.parametrize(
    "device,requested,bf16,want",
    [
        ("cuda", None, True, torch.bfloat16),  # Ampere and later
        ("cuda", None, False, torch.float16),  # older GPUs: fp16 with a scaler
        ("cuda", "float16", True, torch.float16),
        ("cpu", None, True, torch.bfloat16),
    ],
)
def test_amp_dtype_prefers_bf16_where_the_device_has_it(device, requested, bf16, want):
    assert amp_dtype(device, requested, bf16) == want


def test_amp_errors_are_one_line():
    with pytest.raises(ValueError, match=r"^--amp-dtype bfloat16: this cuda device has no bfloat16; use float16$"):
        amp_dtype("cuda", "bfloat16", False)
    with pytest.raises(ValueError, match=r"^--amp-dtype: expected bfloat16 or float16, got 'half'$"):
        amp_dtype("cuda", "half", True)


def test_fp16_on_cuda_gets_a_scaler_bf16_does_not():
    assert Precision("cuda", torch.bfloat16).scaler is None
    assert Precision("cpu", torch.float16).scaler is None


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("accumulate_steps", 0, "--accumulate-steps: expected an integer >= 1, got 0"),
        ("clip_grad", 0.0, "--clip-grad: expected a norm > 0, got 0.0"),
        ("clip_grad", -1.0, "--clip-grad: expected a norm > 0, got -1.0"),
        ("prefetch_factor", 0, "--prefetch-factor: expected an integer >= 1, got 0"),
        ("skip_nonfinite", -1, "--skip-nonfinite: expected an integer >= 0, got -1"),
        ("checkpoint_every", 0, "--checkpoint-every: expected a number > 0, got 0"),
        ("checkpoint_minutes", -5.0, "--checkpoint-minutes: expected a number > 0, got -5.0"),
    ],
)
def test_loop_settings_out_of_range_are_one_line(field, value, message):
    with pytest.raises(ValueError, match="^" + message.replace("+", r"\+") + "$"):
        check_loop_config(LoopConfig(**{field: value}))


def test_cuda_device_without_cuda_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^--device cuda: CUDA is not available on this machine"):
        check_device("cuda")
    with pytest.raises(ValueError, match=r"^--device: 'gpu0' is not a device name"):
        check_device("gpu0")
    check_device("cpu")


def test_workers_default_from_cpus_and_local_processes(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_workers() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert default_workers() == 8  # at most 8
    assert LoopConfig().workers == 8 and LoopConfig(workers=0).workers == 0


def test_loader_options_pin_memory_and_prefetch_on_cuda():
    cfg = LoopConfig(workers=3, prefetch_factor=4)
    cuda = loader_options(cfg, Dist(device=torch.device("cuda", 0)), None)
    assert cuda["pin_memory"] and cuda["persistent_workers"] and cuda["prefetch_factor"] == 4
    cpu = loader_options(LoopConfig(workers=0, prefetch_factor=4), Dist(), None)
    assert not cpu["pin_memory"] and "prefetch_factor" not in cpu  # no workers: nothing to prefetch


def test_ddp_takes_the_local_device_and_bucket_views(monkeypatch):
    seen = {}

    def fake_ddp(model, **kwargs):
        seen.update(kwargs)
        return model

    monkeypatch.setattr("ecanet.training.fit.DistributedDataParallel", fake_ddp)
    wrap_ddp(nn.Linear(2, 2), Dist(1, 2, 1, torch.device("cuda", 1)))
    assert seen == {"device_ids": [1], "gradient_as_bucket_view": True}
    wrap_ddp(nn.Linear(2, 2), Dist(1, 2, 1, torch.device("cpu")))
    assert seen == {"device_ids": None, "gradient_as_bucket_view": True}
