"""Timing on shared, noisy machines, for ``ecanet bench`` and the scripts in ``benchmarks/``: interleaved
repeats in rotating order (A B C, B C A, C A B, ...), so that a slow spell hits every variant alike, and the
provenance every results file records next to its numbers."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 0,
    sync: Callable[[], None] = lambda: None,
    log: Callable[[str], None] | None = None,
    calls: int = 1,
) -> dict[str, list[float]]:
    """Seconds per call of every function: ``warmup`` untimed calls each, then ``repeats`` timed rounds in
    rotating order, each timing ``calls`` calls in a row (short calls: one timing spans several, so that a
    few milliseconds of the machine's noise do not decide it). ``sync`` waits for the device (e.g.
    ``torch.cuda.synchronize``) around each timing."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            sync()
            start = time.perf_counter()
            for _ in range(calls):
                fns[name]()
            sync()
            times[name].append((time.perf_counter() - start) / calls)
        if log is not None:
            log(f"repeat {i + 1}/{repeats} done")
    return times


def calls_per_repeat(fn: Callable[[], object], seconds: float, sync: Callable[[], None] = lambda: None) -> int:
    """How many calls of ``fn`` (already warmed up) one timed repeat needs to last about ``seconds``, from
    the time of one call."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return max(1, round(seconds / (time.perf_counter() - start)))


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if out.returncode != 0:
        return "unknown (not a checkout)"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(command: str | None = None) -> list[str]:
    """Lines saying what produced a result: command, commit, date, CPU, GPU and torch version."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return [
        f"command: {command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])}",
        f"commit: {_commit()}",
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"cpu: {_cpu()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        f"gpu: {gpu}",
        f"torch: {torch.__version__}",
    ]
