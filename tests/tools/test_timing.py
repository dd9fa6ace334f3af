"""Interleaved timing: rotating order, several calls per timed repeat, and the calibration of that count
(on a fake clock, so that nothing depends on how fast this machine is)."""

import itertools

from ecanet.studies import timing


class FakeClock:
    """perf_counter that advances only when a timed function runs: by its fixed cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float):
        def fn() -> None:
            self.now += seconds

        return fn


def test_interleaved_times_each_call_of_a_repeat_and_rotates(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    order = []
    fns = {
        name: (lambda name=name, cost=cost: (order.append(name), clock.work(cost)()))
        for name, cost in (("a", 0.01), ("b", 0.03))
    }
    times = timing.interleaved(fns, repeats=2, warmup=1, calls=3)
    assert {name: len(ts) for name, ts in times.items()} == {"a": 2, "b": 2}
    assert all(abs(t - 0.01) < 1e-12 for t in times["a"]) and all(abs(t - 0.03) < 1e-12 for t in times["b"])
    # warm-up a, b; repeat 1: a a a b b b; repeat 2 (rotated): b b b a a a
    assert "".join(order) == "ab" + "aaabbb" + "bbbaaa"


def test_calls_per_repeat_fills_the_repeat_with_short_calls(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    assert timing.calls_per_repeat(clock.work(0.05), 0.5) == 10
    assert timing.calls_per_repeat(clock.work(2.0), 0.5) == 1  # a long step runs once
    assert timing.calls_per_repeat(clock.work(0.05), 0.0) == 1
    synced = itertools.count()
    timing.calls_per_repeat(clock.work(0.1), 0.5, sync=lambda: next(synced))
    assert next(synced) == 2  # the device is waited for before and after the call
