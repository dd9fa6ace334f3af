"""Preemption and mid-epoch checkpoints, injected for real: a signal sent to the training process at a fixed
step, a process killed with SIGKILL after a periodic checkpoint; the resumed run ends bit for bit like an
uninterrupted one (CPU, no data-loading processes)."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from ecanet import load_checkpoint
from ecanet.training.distributed import Dist
from ecanet.training.preemption import PREEMPTED_EXIT, PausePoints, StopSignals

pytestmark = pytest.mark.slow

# Runs `ecanet train` and, at the training step numbered AT (counting from 1 over the whole run, before it
# computes), sends SIGNAL to itself: a real signal at a fixed point whatever the machine's speed.
SIGNAL_AT_STEP = """
import os, signal, sys
from ecanet.classification.train import ClassificationStep

calls = {"n": 0}
original = ClassificationStep.__call__


def step(self, model, batch):
    if model.training:
        calls["n"] += 1
        if calls["n"] == int(os.environ["AT"]):
            os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL"]))
    return original(self, model, batch)


ClassificationStep.__call__ = step
from ecanet.cli import main
sys.exit(main(sys.argv[1:]))
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
COMPARED = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr")


def argv(data, out, *extra):
    args = ["train", "--model", "eca_resnet20", "--data", str(data), "--output", str(out), "--image-size", "16"]
    return [*args, "--batch-size", "8", "--workers", "0", "--lr", "0.05", "--compare", "--epochs", "3", *extra]


def run_signalled(args, at, sig):
    return subprocess.run(
        [sys.executable, "-c", SIGNAL_AT_STEP, *args], env={**ENV, "AT": str(at), "SIGNAL": sig},
        capture_output=True, text=True,
    )  # fmt: skip


def run(args):
    return subprocess.run([sys.executable, "-m", "ecanet", *args], env=ENV, capture_output=True, text=True)


def assert_same_run(a, b):
    wa, wb = (load_checkpoint(d / "final.safetensors").state_dict() for d in (a, b))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    ra, rb = ([json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b))
    assert [r["epoch"] for r in ra] == [r["epoch"] for r in rb] == [0, 1, 2]
    for key in COMPARED:
        assert [r[key] for r in ra] == [r[key] for r in rb], key
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for key in ("final_top1", "best_top1", "final_top5", "params"):
        assert sa[key] == sb[key], key


@pytest.fixture
def uninterrupted(image_data, tmp_path):
    full = tmp_path / "full"
    done = run(argv(image_data, full))
    assert done.returncode == 0, done.stderr[-2000:]
    return full


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1"])
def test_a_signal_mid_epoch_checkpoints_and_the_resumed_run_is_bit_exact(image_data, tmp_path, uninterrupted, sig):
    """3 steps per epoch: the signal comes before the 5th step (epoch 1, step 1); that step finishes, the run
    writes a checkpoint after 2 steps of epoch 1 and leaves with the requeue code; one command line
    (`--resume auto`) serves the first start and the restart."""
    out = tmp_path / "cut"
    stopped = run_signalled(argv(image_data, out, "--resume", "auto"), at=5, sig=sig)
    assert stopped.returncode == PREEMPTED_EXIT, stopped.stderr[-2000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert (
        last
        == f"ecanet train: stopped by {sig} at epoch 1, step 2: checkpoint in {out / 'checkpoint.pt'}; continue with --resume"
    )
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2)
    resumed = run(argv(image_data, out, "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and "(epoch 1, step 2)" in resumed.stderr
    assert_same_run(out, uninterrupted)


def test_periodic_checkpoints_survive_sigkill_mid_epoch(image_data, tmp_path, uninterrupted):
    """--checkpoint-every 1: killed with SIGKILL before the 5th step, the run resumes after epoch 1's first
    step and ends as the uninterrupted one (which wrote no mid-epoch checkpoints)."""
    out = tmp_path / "killed"
    killed = run_signalled(argv(image_data, out, "--checkpoint-every", "1"), at=5, sig="SIGKILL")
    assert killed.returncode == -signal.SIGKILL
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 1)
    resumed = run(argv(image_data, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(out, uninterrupted)


def test_pause_points_decide_alike():
    signals, now = StopSignals(["SIGUSR1"]), [0.0]
    pause = PausePoints(signals, Dist(), every_steps=4, every_minutes=1.0, clock=lambda: now[0])
    now[0] = 10.0
    assert pause(1) == (False, False)
    now[0] = 61.0
    assert pause(2) == (True, False)  # a minute since the last save
    now[0] = 62.0
    assert pause(3) == (False, False)  # the minute counts from that save
    assert pause(4) == (True, False)  # every 4 steps
    signals.received = "SIGUSR1"
    assert pause(5) == (True, True)


def test_unknown_stop_signal_is_one_line():
    with pytest.raises(ValueError, match=r"^--stop-signals: unknown signal 'SIGFOO' \(e\.g\. SIGTERM, SIGUSR1\)$"):
        StopSignals(["SIGFOO"])


# torchrun's entry: rank 1 of the first attempt kills itself with SIGKILL before its training step AT.
KILL_ONE_WORKER = """
import os, signal, sys
from ecanet.classification.train import ClassificationStep

calls = {"n": 0}
original = ClassificationStep.__call__
first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"


def step(self, model, batch):
    if model.training:
        calls["n"] += 1
        if first_attempt and os.environ["RANK"] == "1" and calls["n"] == int(os.environ["AT"]):
            os.kill(os.getpid(), signal.SIGKILL)
    return original(self, model, batch)


ClassificationStep.__call__ = step
from ecanet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_torchrun_restarts_a_group_that_lost_a_worker_and_resumes_it(image_data, tmp_path):
    """`torchrun --max-restarts 1 ... --resume auto` with one of two workers killed mid-epoch: torchrun restarts
    the group, which resumes from the last checkpoint (epoch 0's) and completes like an uninterrupted run. The
    restarted group meets under a fresh store prefix: without it, it read the dead worker's address."""
    entry = tmp_path / "entry.py"
    entry.write_text(KILL_ONE_WORKER)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

    def args(out):  # 2 epochs of 3 steps of 4 images per process
        a = argv(image_data, out, "--resume", "auto", "--device", "cpu")
        a[a.index("--batch-size") + 1], a[a.index("--epochs") + 1] = "4", "2"
        return a

    full, cut = tmp_path / "full2", tmp_path / "cut2"
    done = subprocess.run([*launch, "-m", "ecanet", *args(full)], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    restarted = subprocess.run(
        [*launch, "--max-restarts", "1", str(entry), *args(cut)], env={**ENV, "AT": "5"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "resuming from" in restarted.stderr and "(epoch 0 done)" in restarted.stderr
    wa, wb = (load_checkpoint(d / "final.safetensors").state_dict() for d in (full, cut))
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    ra, rb = ([json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (full, cut))
    assert [r["epoch"] for r in rb] == [0, 1]
    for key in COMPARED:
        assert [r[key] for r in ra] == [r[key] for r in rb], key
