"""What an evaluation or timing run prints and writes: typed results, the table, the
metricResult line, threshold checks, and the --report record that holds them all."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from ..files import sha256_bytes
from ..table import render_table
from .data import Dataset
from .runner import EvalResult, Timing

MAX_LISTED = 10  # unreadable images listed per subset on the console (the JSON has all)


def _round(value, digits=6):
    return None if value is None else round(float(value), digits)


@dataclass
class SubsetRow:
    """One subset's accuracy and data problems."""

    name: str
    path: str
    lmdb_samples: int
    evaluated: int
    correct: int
    rejected: int
    rejected_by_reason: dict
    rejected_indices: dict
    unreadable: list  # [{"key": image key, "reason": ...}]
    acc: float | None
    norm_edit_dis: float | None


@dataclass
class Pooled:
    samples: int
    correct: int
    acc: float | None
    norm_edit_dis: float | None


@dataclass
class MeanOverSubsets:
    subsets: int
    acc: float | None
    norm_edit_dis: float | None


@dataclass
class AccuracySummary:
    """Every accuracy figure of a run, per subset and overall."""

    subsets: list  # [SubsetRow]
    pooled: Pooled
    mean_over_subsets: MeanOverSubsets
    rejected: int
    unreadable: int
    predictions_sha256: str
    seconds: float | None = None
    # per subset name: every sample's {"key", "label", "prediction", "correct"} (report only)
    predictions: dict = field(default_factory=dict)
    # subset name -> resolved path, for subsets reached through a symlink out of the dataset folder
    outside_root: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Check:
    """A threshold the run must reach (the model zoo's acc / fps targets), or for a latency
    (``at_most``) stay under. ``refused_by``: why the figure does not count whatever its value
    (LoadGen called the run INVALID)."""

    name: str
    target: float
    value: float | None
    at_most: bool = False
    refused_by: str | None = None
    passed: bool = field(init=False)

    def __post_init__(self):
        meets = self.value is not None and (self.value <= self.target if self.at_most else self.value >= self.target)
        self.passed = meets and self.refused_by is None

    @property
    def line(self) -> str:
        got = "-" if self.value is None else round(self.value, 4)
        return (f"{self.name} check: expected {'<=' if self.at_most else '>='} {self.target}, got {got}: "
                f"{'PASS' if self.passed else 'FAIL'}" + (f" ({self.refused_by})" if self.refused_by else ""))

    def to_dict(self) -> dict:
        return asdict(self)


def accuracy_summary(dataset: Dataset, result: EvalResult) -> AccuracySummary:
    unreadable = {}
    for sid, key, reason in result.unreadable:
        unreadable.setdefault(sid, []).append({"key": key, "reason": reason})
    rows = [
        SubsetRow(
            name=subset.name, path=os.path.realpath(subset.path), lmdb_samples=subset.num_samples,
            evaluated=score.n, correct=score.correct, rejected=subset.rejected_count,
            rejected_by_reason={k: len(v) for k, v in sorted(subset.rejected.items())},
            rejected_indices={k: v for k, v in sorted(subset.rejected.items())},
            unreadable=unreadable.get(sid, []), acc=_round(score.acc), norm_edit_dis=_round(score.norm_edit_dis))
        for sid, (subset, score) in enumerate(zip(dataset.subsets, result.metric.subsets))
    ]
    pooled = result.metric.pooled
    mean_acc, mean_ned, used = result.metric.mean_over_subsets()
    return AccuracySummary(
        subsets=rows,
        pooled=Pooled(pooled.n, pooled.correct, _round(pooled.acc), _round(pooled.norm_edit_dis)),
        mean_over_subsets=MeanOverSubsets(used, _round(mean_acc), _round(mean_ned)),
        rejected=sum(r.rejected for r in rows),
        unreadable=len(result.unreadable),
        predictions_sha256=result.predictions_sha256,
        seconds=round(result.seconds, 3),
        predictions={subset.name: result.predictions.get(sid, []) for sid, subset in enumerate(dataset.subsets)},
        outside_root={r.name: r.path for r in rows
                      if os.path.commonpath([r.path, os.path.realpath(dataset.root)]) != os.path.realpath(dataset.root)},
    )


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}"


def _ned(value):
    return "-" if value is None else f"{value:.4f}"


def format_accuracy(summary: AccuracySummary) -> str:
    """The per-subset table, the pooled and the per-subset-mean figures, and any data problems."""
    table = render_table(
        ("subset", "lmdb", "evaluated", "rejected", "unreadable", "acc %", "norm_edit_dis"),
        [(r.name, r.lmdb_samples, r.evaluated, r.rejected, len(r.unreadable), _pct(r.acc), _ned(r.norm_edit_dis))
         for r in summary.subsets])
    lines = [table, "-" * len(table.splitlines()[0])]
    p, m = summary.pooled, summary.mean_over_subsets
    lines.append(f"pooled over all {p.samples} evaluated samples (sample-weighted, the model zoo's 'acc'): "
                 f"acc {_pct(p.acc)} %, norm_edit_dis {_ned(p.norm_edit_dis)}")
    lines.append(f"plain mean over {m.subsets} subsets (PaddleOCR's Avg_{m.subsets} style): "
                 f"acc {_pct(m.acc)} %, norm_edit_dis {_ned(m.norm_edit_dis)}")
    for name, path in summary.outside_root.items():
        lines.append(f"note: {name} is a symlink out of the dataset folder (followed): {path}")
    for r in summary.subsets:
        if r.rejected:
            reasons = ", ".join(f"{k}: {v}" for k, v in r.rejected_by_reason.items())
            lines.append(f"note: {r.name}: {r.rejected} label(s) rejected by PaddleOCR's rules and not "
                         f"evaluated ({reasons})")
        if r.unreadable:
            listed = ", ".join(f"{u['key']} ({u['reason']})" for u in r.unreadable[:MAX_LISTED])
            more = len(r.unreadable) - MAX_LISTED
            lines.append(f"warning: {r.name}: {len(r.unreadable)} image(s) unreadable, counted as wrong: "
                         f"{listed}{f' and {more} more' if more > 0 else ''}")
    return "\n".join(lines)


def format_perf(perf: Timing) -> str:
    lines = [f"* Mean inference time: {perf.mean_ms:.3f} ms, Mean fps: {perf.fps:.3f}",
             f"compute only ({perf.loop_count} batches of {perf.batch_size}, {perf.warmup} warm-up): "
             f"latency per batch p50 {perf.p50_ms:.3f} ms, p99 {perf.p99_ms:.3f} ms"]
    if perf.e2e_fps is not None:
        lines.append(f"end to end over the real data (read + decode + preprocess + inference): "
                     f"{perf.e2e_fps:.1f} img/s; loader alone {perf.loader_fps:.1f} img/s")
    return "\n".join(lines)


def metric_result(values: dict) -> str:
    """The one line model-zoo CI parsers read: {'metricResult': {...}}; numbers rounded, text
    (e.g. ``'weights': 'untrained'``) as is."""
    return str({"metricResult": {k: v if isinstance(v, str) else round(float(v), 4)
                                 for k, v in values.items() if v is not None}})


def run_record(*, perf_only: bool, scenario, engine_path: str, backend, batch_size: int, datasets: str, workers: int,
               cfg, characters) -> dict:
    """The --report's description of a run (its figures and checks are added as they come): the
    mode, the engine and the runtime that ran it, the model's weights, the data, and the config's
    rules with a digest of the character dictionary."""
    return {
        "mode": "performance" if perf_only else "accuracy",
        "scenario": scenario if perf_only else None,
        "engine": {"path": os.path.abspath(engine_path), "backend": backend.name, "device": backend.device_description,
                   "input_name": backend.input_name, "input_shape": list(backend.input_shape),
                   **backend.runtime_description()},
        "model": {"sha256": backend.model_sha256, "weights": backend.weights},
        "batch_size": batch_size,
        "datasets": os.path.abspath(datasets),
        "workers": workers,
        "config": {"path": cfg.path, "sha256": cfg.digest, "image_shape": list(cfg.image_shape),
                   "resize": cfg.resize, "max_text_length": cfg.max_text_length, "lowercase": cfg.lowercase,
                   "ignore_space": cfg.ignore_space, "is_filter": cfg.is_filter, "characters": len(characters),
                   "dictionary_sha256": sha256_bytes("\n".join(characters).encode("utf-8"))},
    }


def record_checks(record: dict, checks: list) -> bool:
    """The run's gate checks into ``record``; whether all passed (a run without gates passes)."""
    record["checks"] = [check.to_dict() for check in checks]
    record["passed"] = all(check.passed for check in checks)
    return record["passed"]
