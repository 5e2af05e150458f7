"""Interleaved timing: every (contender, batch) cell warmed up, calibrated, then sampled round-robin.

After a warm-up that also calibrates how many ``run`` calls make one sample (>= ``min_sample_s``),
the cells are timed round-robin: each round takes one sample of every cell, so machine noise
lands on all of them alike. The start of the round-robin rotates from round to round.

Before every sample (and every warm-up) the benchmark waits until its own process is idle:
runtimes keep worker threads spinning after a call returns (onnxruntime's intra-op pool by
default; TVM's pool yields in a loop 300,000 times before it sleeps), and on a machine with few
cores those threads take cycles from whichever contender is timed next. The round-robin keeps
the cells' cyclic order, so without the wait the same contender would always pay for the same
neighbour's spinning.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

from ..numerics import random_batch
from ..progress import progress as progress_bar

# The longest wait for idle before a sample: well beyond the runtimes' spinning tails, and still
# short beside a round.
DEFAULT_SETTLE_S = 1.0
IDLE_WINDOW_S = 0.01
IDLE_BUSY_FRACTION = 0.1  # idle: this process used under a tenth of one core over a window


def wait_until_idle(max_s: float = DEFAULT_SETTLE_S, window_s: float = IDLE_WINDOW_S,
                    busy_fraction: float = IDLE_BUSY_FRACTION, cpu_clock=time.process_time,
                    wall_clock=time.perf_counter, sleep=time.sleep) -> float:
    """Sleep in windows of ``window_s`` until the process's threads (all of them: the process
    CPU clock) used under ``busy_fraction`` of one core over the last window, at most ``max_s``;
    returns the seconds waited (``max_s`` or more: never idle)."""
    start = wall_clock()
    while wall_clock() - start < max_s:
        cpu, wall = cpu_clock(), wall_clock()
        sleep(window_s)
        elapsed = wall_clock() - wall
        if elapsed > 0 and (cpu_clock() - cpu) / elapsed < busy_fraction:
            break
    return wall_clock() - start


def calls_per_sample(seconds_per_call: float, min_sample_s: float) -> int:
    """How many calls make one sample last at least ``min_sample_s``."""
    if seconds_per_call <= 0:
        return 1
    return max(1, math.ceil(min_sample_s / seconds_per_call))


def interleaved_order(n_cells: int, rounds: int) -> list:
    """(round, cell index) in timing order: every round visits every cell once.

    Round r starts at cell ``r % n_cells`` so the order of neighbours rotates.
    """
    return [(r, (r + k) % n_cells) for r in range(rounds) for k in range(n_cells)]


def summarize(values) -> dict:
    """Median, min, max and relative spread ((max-min)/median) of a list of numbers."""
    values = [float(v) for v in values]
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "spread": None}
    med = statistics.median(values)
    return {
        "n": len(values),
        "median": med,
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / med if med else None,
    }


def images_per_second(batch: int, seconds_per_call: float) -> float:
    return batch / seconds_per_call


@dataclass
class Cell:
    contender: str
    batch: int
    backend: object
    note: str = ""
    calls: int = 1
    samples_s: list = field(default_factory=list)  # seconds per call, one per round
    idle_wait_s: list = field(default_factory=list)  # seconds waited for idle before each sample
    arithmetic: str = "fp32"  # what it computes in: picks the peak its "% peak" is set against
    emulated: bool = False  # a reduced precision computed in fp32 arithmetic (its build description says so)
    parity: object = None  # numerics.Parity against onnxruntime fp32 on this cell's input

    @property
    def label(self):
        return f"{self.contender}@{self.batch}"


def time_calls(backend, batch_array, calls: int) -> float:
    """Seconds per ``run`` call, averaged over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        backend.run(batch_array)
    return (time.perf_counter() - start) / calls


def calibrate(seconds_per_call, min_sample_s: float) -> tuple:
    """(calls per sample, seconds per call seen) for ``seconds_per_call(calls)``: one call first
    (a call that already lasts a sample needs no more), then the call count grows on about half
    a sample, and the sample is sized to last ``min_sample_s``."""
    calls, per_call = 1, seconds_per_call(1)
    while calls * per_call < min_sample_s / 2:
        calls = min(calls * 4, max(calls + 1, calls_per_sample(per_call, min_sample_s / 2)))
        per_call = seconds_per_call(calls)
    return calls_per_sample(per_call, min_sample_s), per_call


def describe_idle_waits(units, max_s: float) -> str:
    """One line on the waits for idle before the samples (each unit's ``idle_wait_s``)."""
    waits = [w for unit in units for w in unit.idle_wait_s]
    if max_s <= 0 or not waits:
        return "no wait for idle before the samples (--settle_s 0)"
    line = (f"waits for idle before the samples: median {statistics.median(waits) * 1e3:.0f} ms, "
            f"longest {max(waits) * 1e3:.0f} ms")
    capped = sum(w >= max_s for w in waits)
    if capped:
        line += (f"; warning: {capped} of {len(waits)} stopped at the {max_s} s limit with this process still "
                 f"busy, so those samples may include the spinning threads of what ran before them")
    return line


def sample_rounds(units, rounds: int, min_sample_s: float, seconds_per_call, log=print, progress=True,
                  wait_for_idle=wait_until_idle) -> None:
    """The round loop every timing of the benchmark shares (the contenders' cells, the kernel
    sweep's kernels). Each unit has ``label``, ``calls``, ``samples_s`` and ``idle_wait_s``;
    ``seconds_per_call(unit, calls)`` times ``calls`` back-to-back calls of it and returns the
    seconds per call. Every unit is calibrated (``calls`` per sample >= ``min_sample_s``), then
    ``rounds`` rounds take one sample of each in ``interleaved_order``. ``wait_for_idle()`` runs
    before every calibration and every sample and returns the seconds it waited (see the module);
    the waits before the samples are kept per unit (``idle_wait_s``)."""
    for unit in units:
        wait_for_idle()
        unit.calls, per_call = calibrate(lambda calls: seconds_per_call(unit, calls), min_sample_s)
        log(f"warm-up {unit.label}: {per_call * 1e3:.4g} ms/call -> {unit.calls} call(s) per sample")
    order = interleaved_order(len(units), rounds)
    bar = progress_bar(len(order), "samples", "timing", enabled=progress)
    try:
        for r, index in order:
            unit = units[index]
            bar.set_description(f"round {r + 1}/{rounds} {unit.label}")
            unit.idle_wait_s.append(wait_for_idle())
            unit.samples_s.append(seconds_per_call(unit, unit.calls))
            bar.update(1)
    finally:
        bar.close()


def run_rounds(cells, rounds: int, min_sample_s: float, log=print, progress=True, image_chw=None,
               wait_for_idle=wait_until_idle) -> None:
    """``sample_rounds`` over the contenders' cells, each timed by ``run`` calls on a fixed
    [-1, 1] batch of ``image_chw`` (default: what each cell's backend takes)."""
    inputs = {}
    for cell in cells:
        inputs.setdefault(cell.batch, random_batch((cell.batch, *(image_chw or cell.backend.input_shape[1:]))))
    sample_rounds(cells, rounds, min_sample_s, lambda cell, calls: time_calls(cell.backend, inputs[cell.batch], calls),
                  log=log, progress=progress, wait_for_idle=wait_for_idle)
