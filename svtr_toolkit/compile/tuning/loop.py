"""The tuning loop: resumable, time-bounded, heaviest kernels first."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time

from ...threads import use_all_cpu_cores
from .builder import forking_builder
from .coverage import extract_tasks, task_flops, task_key
from .database import (INFLIGHT_FILE, PROGRESS_FILE, STUCK_FILE, compact, load_progress, load_stuck, open_database,
                       short, write_state)
from .planning import plan
from .versus_rules import compare_with_rules


def tune(mod, target, folder: str, *, time_budget_s: float, trials_per_task: int = 64, light_trials: int = 8,
         trials_per_round: int = 16, log=print) -> dict:
    """Tune ``mod``'s kernels into the database at ``folder`` until done or out of time.

    Tasks are visited heaviest first (FLOPs x occurrences), in rounds of at most
    ``trials_per_round`` trials, so a short budget is spent where it matters. Progress is
    saved after each task, and a rerun resumes where the last one stopped.
    """
    tasks = extract_tasks(mod, target)
    tasks.sort(key=lambda t: -task_flops(t) * t.weight)
    keyed = [(t, task_key(t)) for t in tasks]  # structural hashes: computed once, used every round
    database = open_database(folder, create=True)
    wanted = plan(database, keyed, trials_per_task, light_trials)
    progress = load_progress(folder)
    stuck = load_stuck(folder, log)
    skipped = [t.task_name for t, k in keyed if k in stuck]
    if skipped:
        log(f"{len(skipped)} kernel(s) skipped as stuck (see {STUCK_FILE}): " + ", ".join(short(n) for n in skipped))
    threads = use_all_cpu_cores()  # candidates are timed with the pool the engine will run with
    log(f"timing candidates with {threads} threads")
    start = time.monotonic()
    search = _Search(folder, database)
    bar = _progress_bar(sum(wanted.values()), sum(min(progress.get(k, 0), n) for k, n in wanted.items()))
    try:
        while time.monotonic() - start < time_budget_s:
            pending = [(t, k) for t, k in keyed if progress.get(k, 0) < wanted[k] and k not in stuck]
            if not pending:
                break
            for task, key in pending:
                if time.monotonic() - start >= time_budget_s:
                    break
                trials = min(trials_per_round, wanted[key] - progress.get(key, 0))
                bar.set_postfix_str(task.task_name[:30])  # the kernel being searched now
                search.round(task, key, trials)
                progress[key] = progress.get(key, 0) + trials
                bar.update(trials)
                write_state(os.path.join(folder, PROGRESS_FILE), progress)
            wanted = plan(database, keyed, trials_per_task, light_trials)  # a pass can show a kernel slow for its FLOPs
            bar.total = sum(wanted.values())
    finally:
        bar.close()
        search.close()
    if os.path.isfile(os.path.join(folder, PROGRESS_FILE)):
        compact(folder, log)
        compare_with_rules(folder, keyed, target, log)
    remaining = sum(max(0, n - progress.get(k, 0)) for k, n in wanted.items() if k not in stuck)
    return {"tasks": len(tasks), "seconds": round(time.monotonic() - start, 1), "remaining_trials": remaining}


def _progress_bar(total, initial):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="trial", desc="tuning", file=sys.stderr)


class _Search:
    """One MetaSchedule round per call, its kernel marked in flight while it runs."""

    def __init__(self, folder, database):
        import tempfile

        from tvm.s_tir import meta_schedule as ms

        self.database = database
        self.inflight = os.path.join(folder, INFLIGHT_FILE)
        self.runner = ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1,
                                                                                         min_repeat_ms=40))
        self.builder = forking_builder()
        self.logs = tempfile.TemporaryDirectory()

    def round(self, task, key, trials):
        from tvm.s_tir import meta_schedule as ms

        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts([task], work_dir=self.logs.name)
        # MetaSchedule sets its console handler's level from its logger's level on every
        # call (and then resets that logger to DEBUG): WARNING here keeps per-task tables
        # from burying the progress bar; the redirects catch what is printed directly.
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
        write_state(self.inflight, {key: task.task_name})
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=self.logs.name, max_trials_global=trials,
                          num_trials_per_iter=trials, builder=self.builder, runner=self.runner,
                          database=self.database, cost_model="xgb", task_scheduler="round-robin")
        os.remove(self.inflight)

    def close(self):
        self.logs.cleanup()
