"""What an evaluation or timing run prints and writes: table, metricResult line, checks, JSON."""
from __future__ import annotations

import json
import os

from .data import Dataset
from .errors import ToolkitError
from .runner import EvalResult

MAX_LISTED = 10  # unreadable images listed per subset on the console (the JSON has all)


def _round(value, digits=6):
    return None if value is None else round(float(value), digits)


def accuracy_summary(dataset: Dataset, result: EvalResult) -> dict:
    """Every accuracy figure of a run, per subset and overall, as plain data."""
    unreadable = {}
    for sid, key, reason in result.unreadable:
        unreadable.setdefault(sid, []).append({"key": key, "reason": reason})
    subsets = []
    for sid, (subset, score) in enumerate(zip(dataset.subsets, result.metric.subsets)):
        subsets.append({
            "name": subset.name,
            "path": os.path.abspath(subset.path),
            "lmdb_samples": subset.num_samples,
            "evaluated": score.n,
            "correct": score.correct,
            "rejected": subset.rejected_count,
            "rejected_by_reason": {k: len(v) for k, v in sorted(subset.rejected.items())},
            "rejected_indices": {k: v for k, v in sorted(subset.rejected.items())},
            "unreadable": unreadable.get(sid, []),
            "acc": _round(score.acc),
            "norm_edit_dis": _round(score.norm_edit_dis),
        })
    pooled = result.metric.pooled
    mean_acc, mean_ned, used = result.metric.mean_over_subsets()
    return {
        "subsets": subsets,
        "pooled": {"samples": pooled.n, "correct": pooled.correct, "acc": _round(pooled.acc),
                   "norm_edit_dis": _round(pooled.norm_edit_dis)},
        "mean_over_subsets": {"subsets": used, "acc": _round(mean_acc), "norm_edit_dis": _round(mean_ned)},
        "rejected": sum(s["rejected"] for s in subsets),
        "unreadable": len(result.unreadable),
        "predictions_sha256": result.predictions_sha256,
    }


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}"


def _ned(value):
    return "-" if value is None else f"{value:.4f}"


def format_accuracy(summary: dict) -> str:
    """The per-subset table, the pooled and the per-subset-mean figures, and any data problems."""
    rows = summary["subsets"]
    width = max([len("subset")] + [len(r["name"]) for r in rows])
    head = f"{'subset':<{width}}  {'lmdb':>6}  {'evaluated':>9}  {'rejected':>8}  {'unreadable':>10}  {'acc %':>7}  {'norm_edit_dis':>13}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {r['lmdb_samples']:>6}  {r['evaluated']:>9}  {r['rejected']:>8}  "
                     f"{len(r['unreadable']):>10}  {_pct(r['acc']):>7}  {_ned(r['norm_edit_dis']):>13}")
    lines.append("-" * len(head))
    p, m = summary["pooled"], summary["mean_over_subsets"]
    lines.append(f"pooled over all {p['samples']} evaluated samples (sample-weighted, the model zoo's 'acc'): "
                 f"acc {_pct(p['acc'])} %, norm_edit_dis {_ned(p['norm_edit_dis'])}")
    lines.append(f"plain mean over {m['subsets']} subsets (PaddleOCR's Avg_{m['subsets']} style): "
                 f"acc {_pct(m['acc'])} %, norm_edit_dis {_ned(m['norm_edit_dis'])}")
    for r in rows:
        if r["rejected"]:
            reasons = ", ".join(f"{k}: {v}" for k, v in r["rejected_by_reason"].items())
            lines.append(f"note: {r['name']}: {r['rejected']} label(s) rejected by PaddleOCR's rules and not "
                         f"evaluated ({reasons})")
        if r["unreadable"]:
            listed = ", ".join(f"{u['key']} ({u['reason']})" for u in r["unreadable"][:MAX_LISTED])
            more = len(r["unreadable"]) - MAX_LISTED
            lines.append(f"warning: {r['name']}: {len(r['unreadable'])} image(s) unreadable, counted as wrong: "
                         f"{listed}{f' and {more} more' if more > 0 else ''}")
    return "\n".join(lines)


def format_perf(perf: dict) -> str:
    lines = [f"* Mean inference time: {perf['mean_ms']:.3f} ms, Mean fps: {perf['fps']:.3f}",
             f"compute only ({perf['loop_count']} batches of {perf['batch_size']}, {perf['warmup']} warm-up): "
             f"latency per batch p50 {perf['p50_ms']:.3f} ms, p99 {perf['p99_ms']:.3f} ms"]
    if "e2e_fps" in perf:
        lines.append(f"end to end over the real data (read + decode + preprocess + inference): "
                     f"{perf['e2e_fps']:.1f} img/s; loader alone {perf['loader_fps']:.1f} img/s")
    return "\n".join(lines)


def metric_result(values: dict) -> str:
    """The one line model-zoo CI parsers read: {'metricResult': {...}}."""
    return str({"metricResult": {k: round(float(v), 4) for k, v in values.items() if v is not None}})


def check_target(name: str, value, target) -> dict:
    passed = value is not None and value >= target
    line = f"{name} check: expected >= {target}, got {'-' if value is None else round(value, 4)}: {'PASS' if passed else 'FAIL'}"
    return {"name": name, "target": target, "value": value, "passed": passed, "line": line}


def write_json(path: str, data: dict) -> None:
    try:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
    except OSError as exc:
        raise ToolkitError(f"cannot write report {path}: {exc.strerror}")
