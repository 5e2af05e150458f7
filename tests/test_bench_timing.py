"""svtr_toolkit.bench.timing: statistics, calibration, the interleaved round loop and its wait for
idle, shared by the benchmark's contenders and the kernel sweep.

No timing is asserted here: speed depends on the machine and is never a test result.
"""
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest

from svtr_toolkit import bench
from svtr_toolkit.bench import timing


# ----------------------------------------------------------------------------- statistics
def test_summarize_odd_and_even():
    s = bench.summarize([3.0, 1.0, 2.0])
    assert s == {"n": 3, "median": 2.0, "min": 1.0, "max": 3.0, "spread": 1.0}
    s = bench.summarize([4, 1, 2, 3])
    assert s["median"] == 2.5 and s["min"] == 1 and s["max"] == 4
    assert s["spread"] == pytest.approx(3 / 2.5)


def test_summarize_empty_and_single():
    assert bench.summarize([])["median"] is None
    s = bench.summarize([5.0])
    assert s["median"] == s["min"] == s["max"] == 5.0 and s["spread"] == 0.0


@pytest.mark.parametrize("per_call, minimum, want", [
    (0.05, 0.2, 4), (0.06, 0.2, 4), (0.2, 0.2, 1), (10.0, 0.2, 1), (0.001, 0.2, 200), (0.0, 0.2, 1),
])
def test_calls_per_sample(per_call, minimum, want):
    calls = bench.calls_per_sample(per_call, minimum)
    assert calls == want
    if per_call > 0:
        assert calls * per_call >= minimum - 1e-12


# ----------------------------------------------------------------------------- interleaving
def test_interleaved_order_visits_every_cell_once_per_round():
    order = bench.interleaved_order(3, 4)
    assert len(order) == 12
    for r in range(4):
        in_round = [cell for rr, cell in order if rr == r]
        assert sorted(in_round) == [0, 1, 2]
    # rounds are contiguous: a round finishes before the next starts
    assert [r for r, _ in order] == sorted(r for r, _ in order)


def test_interleaved_order_rotates_the_start():
    order = bench.interleaved_order(3, 3)
    assert order == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 0), (2, 2), (2, 0), (2, 1)]
    firsts = Counter(order[k * 3][1] for k in range(3))
    assert firsts == Counter({0: 1, 1: 1, 2: 1})


def test_interleaved_order_single_cell():
    assert bench.interleaved_order(1, 3) == [(0, 0), (1, 0), (2, 0)]


class FakeBackend:
    def __init__(self, batch=None, log=None, name="fake"):
        self.input_shape = (batch, 3, 64, 256)
        self.log = log
        self.name = name

    def run(self, batch):
        if self.log is not None:
            self.log.append(self.name)
        return np.zeros((batch.shape[0], 25, 37), np.float32)


def test_run_rounds_times_round_robin():
    calls = []
    cells = [bench.Cell("a", 1, FakeBackend(None, calls, "a")), bench.Cell("b", 1, FakeBackend(1, calls, "b"))]
    bench.run_rounds(cells, rounds=3, min_sample_s=1e-9, log=lambda *_: None, progress=False, wait_for_idle=lambda: 0.0)
    assert all(len(c.samples_s) == 3 for c in cells)
    assert all(c.calls == 1 for c in cells)
    timed = calls[2:]  # after one warm-up call each
    assert timed == ["a", "b", "b", "a", "a", "b"]


def test_run_rounds_waits_for_idle_before_every_sample_and_warm_up():
    # A contender's spinning worker threads must not be billed to the next one: every
    # warm-up and every sample starts after the wait for idle, nothing runs in between.
    events = []

    def wait_for_idle():
        events.append("idle")
        return 0.05

    cells = [bench.Cell("a", 1, FakeBackend(None, events, "a")), bench.Cell("b", 1, FakeBackend(1, events, "b"))]
    bench.run_rounds(cells, rounds=2, min_sample_s=1e-9, log=lambda *_: None, progress=False, wait_for_idle=wait_for_idle)
    assert events == ["idle", "a", "idle", "b", "idle", "a", "idle", "b", "idle", "b", "idle", "a"]
    assert cells[0].idle_wait_s == [0.05, 0.05] and bench.cell_result(cells[0])["idle_wait_s"] == [0.05, 0.05]
    assert "median 50 ms" in timing.describe_idle_waits(cells, 1.0)


class FakeClocks:
    """A process whose threads use ``busy`` of a core for ``busy_s`` seconds, then nothing."""

    def __init__(self, busy_s, busy=1.0):
        self.wall = self.cpu = 0.0
        self.busy_s, self.busy = busy_s, busy

    def sleep(self, seconds):
        spinning = max(0.0, min(seconds, self.busy_s - self.wall))
        self.cpu += spinning * self.busy
        self.wall += seconds


def test_wait_until_idle_outlasts_a_spinning_pool_and_stops_at_the_limit():
    pool = FakeClocks(busy_s=0.2)  # TVM's pool after a call
    waited = timing.wait_until_idle(1.0, 0.01, 0.1, cpu_clock=lambda: pool.cpu, wall_clock=lambda: pool.wall,
                                    sleep=pool.sleep)
    assert 0.2 <= waited <= 0.22
    idle = FakeClocks(busy_s=0.0)
    assert timing.wait_until_idle(1.0, 0.01, 0.1, cpu_clock=lambda: idle.cpu, wall_clock=lambda: idle.wall,
                                  sleep=idle.sleep) == pytest.approx(0.01)
    busy = FakeClocks(busy_s=10.0, busy=0.5)
    waited = timing.wait_until_idle(0.3, 0.01, 0.1, cpu_clock=lambda: busy.cpu, wall_clock=lambda: busy.wall,
                                    sleep=busy.sleep)
    assert 0.3 <= waited < 0.32
    cells = [bench.Cell("a", 1, None, idle_wait_s=[waited])]
    assert "1 of 1 stopped at the 0.3 s limit" in timing.describe_idle_waits(cells, 0.3)
    assert "no wait" in timing.describe_idle_waits(cells, 0)


def test_run_rounds_progress_in_a_log_is_plain_lines(capsys):
    cells = [bench.Cell("a", 1, FakeBackend(None, None, "a"))]
    bench.run_rounds(cells, rounds=4, min_sample_s=1e-9, log=lambda *_: None, progress=True, wait_for_idle=lambda: 0.0)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("round 4/4 a@1: 4/4 samples (100 %")


@dataclass
class Unit:
    """Anything the round loop times: here a kernel of the sweep, seconds per call given."""
    label: str
    seconds: float
    calls: int = 1
    samples_s: list = field(default_factory=list)
    idle_wait_s: list = field(default_factory=list)


def test_sample_rounds_times_any_unit_after_the_wait_for_idle():
    events = []

    def wait_for_idle():
        events.append("idle")
        return 0.02

    def seconds_per_call(unit, calls):
        events.append(unit.label)
        return unit.seconds

    units = [Unit("k32", 0.3), Unit("k64", 0.6)]
    lines = []
    timing.sample_rounds(units, 2, 0.2, seconds_per_call, log=lines.append, progress=False,
                         wait_for_idle=wait_for_idle)
    assert events == ["idle", "k32", "idle", "k64", "idle", "k32", "idle", "k64", "idle", "k64", "idle", "k32"]
    assert [u.samples_s for u in units] == [[0.3, 0.3], [0.6, 0.6]] and all(u.calls == 1 for u in units)
    assert [u.idle_wait_s for u in units] == [[0.02, 0.02], [0.02, 0.02]]
    assert lines == ["warm-up k32: 300 ms/call -> 1 call(s) per sample", "warm-up k64: 600 ms/call -> 1 call(s) per sample"]
    assert "median 20 ms" in timing.describe_idle_waits(units, 1.0)
