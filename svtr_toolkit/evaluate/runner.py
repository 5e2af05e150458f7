"""The two loops of inference.py: batches from the dataset through a backend, scored
(``evaluate``) or timed (``timed_loop``, the model zoo's --perf_only figure)."""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ToolkitError
from ..preprocess import Preprocessor
from ..progress import progress as progress_bar
from .data import Dataset, iter_batches
from .metrics import RecMetric, ctc_greedy_decode


@dataclass
class EvalResult:
    metric: RecMetric
    unreadable: list = field(default_factory=list)  # (subset id, image key, reason)
    predictions_sha256: str = ""
    seconds: float = 0.0
    # per subset id: [{"key", "label", "prediction", "correct"}] in sample order (the report's
    # per-sample record, what tools/compare_reports.py pairs two runs by)
    predictions: dict = field(default_factory=dict)


def evaluate(backend, dataset: Dataset, preprocess: Preprocessor, characters, batch_size: int, *,
             ignore_space=True, is_filter=False, workers=2, progress=False) -> EvalResult:
    """Run every sample of ``dataset`` through ``backend`` and score it."""
    if not dataset.samples:
        raise ToolkitError(f"no evaluable sample under {dataset.root} (every label was rejected)")
    metric = RecMetric(len(dataset.subsets), ignore_space, is_filter)
    result = EvalResult(metric)
    digest = hashlib.sha256()
    bar = None
    start = time.perf_counter()
    try:
        for batch in iter_batches(dataset, preprocess, batch_size, workers):
            probs = np.asarray(backend.run(batch.images))
            if probs.shape[0] != batch_size:
                raise ToolkitError(f"engine returned {probs.shape[0]} rows for a batch of {batch_size}")
            preds = ctc_greedy_decode(probs[:len(batch.samples)], characters)
            for row, sample in enumerate(batch.samples):
                if row in batch.failed:
                    preds[row] = ""
                    result.unreadable.append((sample.subset, sample.image_key, batch.failed[row]))
                metric.update(sample.subset, preds[row], sample.target)
                digest.update(preds[row].encode("utf-8") + b"\n")
                result.predictions.setdefault(sample.subset, []).append(
                    {"key": sample.image_key, "label": sample.target, "prediction": preds[row],
                     "correct": metric.is_correct(preds[row], sample.target)})
            if bar is None:  # after the first batch checked out: an error stays one line
                bar = progress_bar(len(dataset.samples), "img", "eval", enabled=progress)
            bar.update(len(batch.samples))
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - start
    result.predictions_sha256 = digest.hexdigest()
    return result


def _cycle(samples, count):
    return [samples[i % len(samples)] for i in range(count)]


@dataclass
class Timing:
    """Compute-only figures from the backend's own timer, and end-to-end ones over the data."""

    batch_size: int
    warmup: int
    loop_count: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    fps: float
    loader_fps: float | None = None  # reading + decoding + preprocessing alone, img/s
    e2e_fps: float | None = None  # the same plus inference, img/s

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def timed_loop(backend, dataset: Dataset, preprocess: Preprocessor, batch_size: int, *,
               warmup=3, loop_count=20, workers=2) -> Timing:
    """Compute-only timing (the backend's own timer), loader-only and end-to-end throughput.

    ``loop_count`` (at least 1) batches are timed after ``warmup`` untimed ones."""
    if warmup > 0:
        backend.time_compute(warmup, 1)
    times = np.asarray(backend.time_compute(loop_count, 1), dtype=np.float64)
    mean_s = float(times.mean())
    timing = Timing(batch_size=batch_size, warmup=warmup, loop_count=loop_count, mean_ms=mean_s * 1e3,
                    p50_ms=float(np.percentile(times, 50)) * 1e3, p99_ms=float(np.percentile(times, 99)) * 1e3,
                    fps=batch_size / mean_s)
    if dataset.samples:
        samples = _cycle(dataset.samples, loop_count * batch_size)
        start = time.perf_counter()
        for _ in iter_batches(dataset, preprocess, batch_size, workers, samples):
            pass
        timing.loader_fps = len(samples) / (time.perf_counter() - start)
        start = time.perf_counter()
        for batch in iter_batches(dataset, preprocess, batch_size, workers, samples):
            backend.run(batch.images)
        timing.e2e_fps = len(samples) / (time.perf_counter() - start)
    return timing
