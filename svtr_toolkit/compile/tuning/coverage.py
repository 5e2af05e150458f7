"""The engine's kernels as MetaSchedule tasks, and how much of them a database schedules."""
from __future__ import annotations

import os

from ...paths import shown
from .database import has_records, module_key


def extract_tasks(mod, target):
    """The kernels worth tuning: those with a reduction (matmuls, convolutions, reductions).

    Purely elementwise kernels (bias, activation, transposes, gathers) are memory-bound and
    fully served by the injective default rule; MetaSchedule adds nothing there, and its
    search can spin for many minutes on long fused elementwise chains.
    """
    from tvm.s_tir import meta_schedule as ms

    from ..targets.llvm import lower

    return [task for task in ms.relax_integration.extract_tasks(lower(mod, target), target) if _has_reduction(task)]


def _has_reduction(task) -> bool:
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    blocks = normalize_prim_func(s_tir.Schedule(task.dispatched[0]["main"]))
    return blocks is None or any(not block.is_injective() for block in blocks)


def prim_func_flops(mod) -> float | None:
    """TVM's FLOP estimate of a one-kernel IRModule; None where it has none (opaque calls)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(mod))
    except Exception:
        return None


def task_flops(task) -> float:
    return prim_func_flops(task.dispatched[0]) or 0.0


def task_key(task) -> str:
    return module_key(task.dispatched[0])


def best_seconds(database, task) -> float | None:
    """The fastest time the database holds for this kernel, or None."""
    mod = task.dispatched[0]
    if database is None or not database.has_workload(mod):
        return None
    records = database.get_top_k(database.commit_workload(mod), 1)
    return float(records[0].run_secs[0]) if records and records[0].run_secs else None


def coverage(mod, target, db_folder: str) -> tuple[int, int, float]:
    """(tasks with a record, tasks, fraction of FLOPs covered) for this module and database."""
    from .versus_rules import open_for_build

    database = open_for_build(db_folder)
    tasks = extract_tasks(mod, target)
    total = sum(task_flops(t) * t.weight for t in tasks) or 1.0
    if database is None:
        return 0, len(tasks), 0.0
    hit, hit_flops = 0, 0.0
    for t in tasks:
        if database.has_workload(t.dispatched[0]) and database.query_tuning_record(t.dispatched[0], target, t.task_name):
            hit += 1
            hit_flops += task_flops(t) * t.weight
    return hit, len(tasks), hit_flops / total


def describe_coverage(mod, target, db_folder: str | None, log=print) -> dict:
    """Say how much of the engine the database schedules; the rest get the default rules.

    ``db_folder`` None means no database is used (none fits this CPU, or tuning was turned
    off); a folder without records means nothing has been tuned into it yet.
    """
    if db_folder is None or not has_records(db_folder):
        return {"database": None, "tuned_kernels": 0, "flops_covered": 0.0}
    hit, total, fraction = coverage(mod, target, db_folder)
    log(f"tuning database {shown(db_folder)}: {hit}/{total} kernels, {100 * fraction:.1f}% of FLOPs tuned"
        + ("" if hit == total else "; the rest get the default schedule rules (tune more with tools/tune_cpu.py)"))
    return {"database": os.path.abspath(db_folder), "tuned_kernels": hit, "kernels": total, "flops_covered": round(fraction, 4)}
