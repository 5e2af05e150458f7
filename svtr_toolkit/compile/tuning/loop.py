"""The tuning loop: resumable, time-bounded, heaviest kernels first."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import time

from ...errors import ToolkitError
from ...paths import REPO_ROOT
from ...rpc import tracker_state, tuning_session
from ...threads import use_all_cpu_cores
from .builder import forking_builder
from .coverage import extract_tasks, task_flops, task_key
from .database import (INFLIGHT_FILE, PROGRESS_FILE, STUCK_FILE, compact, load_progress, load_stuck, open_database,
                       short, write_state)
from .planning import plan
from .versus_rules import compare_with_rules


def tune(mod, target, folder: str, *, time_budget_s: float, trials_per_task: int = 64, light_trials: int = 8,
         trials_per_round: int = 16, log=print, remote=None) -> dict:
    """Tune ``mod``'s kernels into the database at ``folder`` until done or out of time.

    Tasks are visited heaviest first (FLOPs x occurrences), in rounds of at most
    ``trials_per_round`` trials, so a short budget is spent where it matters. Progress is
    saved after each task, and a rerun resumes where the last one stopped.

    ``remote`` (an ``rpc.TrackerAddress``): candidates are built here and timed on every server
    the tracker holds under the key, in parallel (MetaSchedule's RPCRunner).
    """
    _load_cpu_tensor_intrinsics()
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
    if remote is None:
        threads = use_all_cpu_cores()  # candidates are timed with the pool the engine will run with
        log(f"timing candidates with {threads} threads")
        runner = _local_runner()
    else:
        servers = tracker_state(remote).registered
        log(f"timing candidates on {servers} RPC server(s) under key '{remote.key}' at {remote.host}:{remote.port}")
        runner = _rpc_runner(remote, servers)
    start = time.monotonic()
    search = _Search(folder, database, runner)
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
                if remote is not None:
                    _check_servers_left(remote, database)
            wanted = plan(database, keyed, trials_per_task, light_trials)  # a pass can show a kernel slow for its FLOPs
            bar.total = sum(wanted.values())
    finally:
        bar.close()
        search.close()
    if os.path.isfile(os.path.join(folder, PROGRESS_FILE)):
        compact(folder, log)
        compare_with_rules(folder, keyed, target, log, remote=remote)
    remaining = sum(max(0, n - progress.get(k, 0)) for k, n in wanted.items() if k not in stuck)
    return {"tasks": len(tasks), "seconds": round(time.monotonic() - start, 1), "remaining_trials": remaining}


def _progress_bar(total, initial):
    from ...progress import progress

    return progress(total, "trial", "tuning", initial=initial)


def _load_cpu_tensor_intrinsics() -> None:
    """The CPU tensor intrinsics only, before MetaSchedule asks for all of them.

    Every TuneContext runs ``import tvm.s_tir.tensor_intrin``, whose package module parses every
    target's intrinsics in TVMScript, CUDA's included: most of a tuning process's start-up on a
    small CPU, for intrinsics a CPU build never uses (docs give the timing). The package is registered
    without running its ``__init__`` and its CPU submodules are imported, so that import finds it
    loaded; other targets' submodules still import on demand (``tensor_intrin.cuda``)."""
    import importlib
    import importlib.util
    import sys

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    package = importlib.util.module_from_spec(importlib.util.find_spec(name))
    sys.modules[name] = package
    try:
        for cpu in ("x86", "arm_cpu", "riscv_cpu"):
            importlib.import_module(f"{name}.{cpu}")
    except BaseException:
        del sys.modules[name]  # the full import will run instead
        raise


def _evaluator_config():
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=40)


def _local_runner():
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.LocalRunner(evaluator_config=_evaluator_config())


def _rpc_runner(remote, servers: int):
    """One worker per server: each takes a session from the tracker per candidate, so N servers
    time N candidates at once. Sessions come from ``rpc.tuning_session``, which gives up when no
    server is free within the wait; the workers (new processes) import it from this checkout."""
    from tvm.s_tir import meta_schedule as ms

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))
    config = ms.runner.RPCConfig(tracker_host=remote.host, tracker_port=remote.port, tracker_key=remote.key,
                                 session_priority=1, session_timeout_sec=120)
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=_evaluator_config(), max_workers=max(1, servers),
                               f_create_session=tuning_session)


def _check_servers_left(remote, database) -> None:
    """Every server gone: stop with what was measured kept (each round is committed as it ends)."""
    if tracker_state(remote).registered == 0:
        raise ToolkitError(f"every RPC server under key '{remote.key}' left the tracker at {remote.host}:"
                           f"{remote.port} during tuning; the database keeps the {len(database)} records "
                           f"measured so far: restart the servers and rerun to resume")


class _Search:
    """One MetaSchedule round per call, its kernel marked in flight while it runs."""

    def __init__(self, folder, database, runner):
        import tempfile

        self.database = database
        self.inflight = os.path.join(folder, INFLIGHT_FILE)
        self.runner = runner
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
