"""Stopping in the middle of an epoch without losing it: the signals a cluster sends before it takes a job's
machines (SLURM: SIGTERM or SIGUSR1, then SIGKILL after a grace period), and the pause points where the loop
checkpoints — on such a signal, every ``--checkpoint-every`` steps, or every ``--checkpoint-minutes``.

A signal only sets a flag: the step in flight finishes, the main process writes a mid-epoch checkpoint, and
every process leaves with ``PREEMPTED_EXIT`` (a job script requeues on it); ``--resume`` continues from that
step of that epoch."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from ..errors import TrainingError
from .distributed import Dist, all_reduce_sum

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again later"; the job script's cue to requeue


class Preempted(TrainingError):
    """The run stopped on a signal after writing a mid-epoch checkpoint: resume it with ``--resume``."""

    exit_code = PREEMPTED_EXIT


class StopSignals:
    """While entered, the named signals (e.g. ``["SIGTERM", "SIGUSR1"]``) set ``received`` instead of ending
    the process; the previous handlers come back on exit. Outside the main thread nothing is installed."""

    def __init__(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if not isinstance(getattr(signal, n, None), signal.Signals)]
        if unknown:
            raise ValueError(f"--stop-signals: unknown signal {unknown[0]!r} (e.g. SIGTERM, SIGUSR1)")
        self.signals = [getattr(signal, n) for n in names]
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class PausePoints:
    """Decides, at the end of each optimizer step, whether to checkpoint and whether to stop, the same in
    every process: steps are counted alike everywhere; a signal or the clock is agreed on with one
    all-reduce at every ``agree_every``-th step (every step in a single process, where it is free)."""

    def __init__(
        self,
        signals: StopSignals,
        proc: Dist,
        every_steps: int | None = None,
        every_minutes: float | None = None,
        agree_every: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.signals, self.proc, self.every_steps, self.every_minutes = signals, proc, every_steps, every_minutes
        self.agree_every, self.clock = agree_every, clock
        self.last_save = clock()

    def __call__(self, done: int) -> tuple[bool, bool]:
        """(checkpoint now, stop now) after ``done`` micro-batches of this epoch."""
        stop = self.signals.received is not None
        timed = self.every_minutes is not None and self.clock() - self.last_save >= 60 * self.every_minutes
        if self.proc.enabled:
            if done % self.agree_every:
                stop = timed = False
            else:
                stop, timed = (v > 0 for v in all_reduce_sum([float(stop), float(timed)], self.proc))
        due = self.every_steps is not None and done % self.every_steps == 0
        save = stop or timed or due
        if save:
            self.last_save = self.clock()
        return save, stop
