"""Interleaved timing: every (contender, batch) cell warmed up, calibrated, then sampled round-robin.

After a warm-up that also calibrates how many ``run`` calls make one sample (>= ``min_sample_s``),
the cells are timed round-robin: each round takes one sample of every cell, so machine noise
lands on all of them alike. The start of the round-robin rotates from round to round so no
cell always runs right after the same neighbour.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

from ..numerics import random_batch


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
    arithmetic: str = "fp32"  # what it computes in: picks the peak its "% peak" is set against
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


def warm_up(cell: Cell, batch_array, min_sample_s: float) -> float:
    """One untimed call, then calibrate ``cell.calls``; returns the seconds per call seen."""
    cell.calls, per_call = calibrate(lambda calls: time_calls(cell.backend, batch_array, calls), min_sample_s)
    return per_call


def run_rounds(cells, rounds: int, min_sample_s: float, log=print, progress=True, image_chw=None) -> None:
    """Warm up and calibrate every cell, then take ``rounds`` interleaved samples of each, on a
    fixed [-1, 1] batch of ``image_chw`` (default: what each cell's backend takes)."""
    inputs = {}
    for cell in cells:
        inputs.setdefault(cell.batch, random_batch((cell.batch, *(image_chw or cell.backend.input_shape[1:]))))
        per_call = warm_up(cell, inputs[cell.batch], min_sample_s)
        log(f"warm-up {cell.label}: {per_call * 1e3:.1f} ms/call -> {cell.calls} call(s) per sample")
    order = interleaved_order(len(cells), rounds)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(order), unit="sample", desc="timing", dynamic_ncols=True)
    try:
        for r, index in order:
            cell = cells[index]
            if bar is not None:
                bar.set_description(f"round {r + 1}/{rounds} {cell.label}")
            cell.samples_s.append(time_calls(cell.backend, inputs[cell.batch], cell.calls))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
