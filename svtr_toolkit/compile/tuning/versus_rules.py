"""A tuned schedule is kept only where it beats the default rules.

MetaSchedule searches its own space and knows nothing of the default rules, so after a
tuning run some of its best records are slower than what a build would do without them.
Each kernel's best record and the rule's schedule are compiled and timed the same way,
interleaved, and the kernels where the rule wins are listed in ``rules_win.json``; builds
apply the database without those records (``open_for_build``).
"""
from __future__ import annotations

import itertools
import json
import os

from ...files import write_json
from .database import RULES_WIN_FILE, module_key, open_database


def rules_win(folder: str) -> dict:
    path = os.path.join(folder, RULES_WIN_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def open_for_build(folder: str):
    """The database a build applies: every record but those the default rules beat."""
    from tvm.s_tir import meta_schedule as ms

    database = open_database(folder)
    beaten = rules_win(folder)
    if database is None or not beaten:
        return database
    kept = ms.database.MemoryDatabase()
    for record in database.get_all_tuning_records():
        if module_key(record.workload.mod) in beaten:
            continue
        kept.commit_tuning_record(ms.database.TuningRecord(
            record.trace, kept.commit_workload(record.workload.mod), record.run_secs, record.target,
            record.args_info))
    return kept


_UPLOADED = itertools.count()


def _timer(func, target, number: int = 3, remote=None):
    """A function that times one call of the compiled kernel (best of ``number``) on fixed inputs,
    here or on ``remote`` (an ``rpc.RemoteDevice``)."""
    import tempfile

    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms

    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)
    if remote is None:
        module, device = lib.mod, tvm.cpu()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            name = f"kernel_{next(_UPLOADED)}.so"  # a fresh name: dlopen hands back a path it has loaded
            lib.export_library(os.path.join(tmp, name))
            remote.session.upload(os.path.join(tmp, name))
        module, device = remote.session.load_module(name), remote.session.cpu(0)
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.uniform(-1, 1, [int(d) for d in info.shape]).astype(str(info.dtype)), device)
            for info in ms.arg_info.ArgInfo.from_prim_func(func)]
    evaluator = module.time_evaluator("main", device, number=number, repeat=1, min_repeat_ms=20)
    return lambda: evaluator(*args).results[0]


def compare_with_rules(folder: str, keyed_tasks, target, log=print, rounds: int = 3, remote=None) -> dict:
    """Time each kernel's best record against the default rules; write and return the wins.
    ``remote`` (an ``rpc.TrackerAddress``): timed on one server under that key."""
    from ...rpc import connect
    from ..schedule_rules import first_rule

    database = open_database(folder)
    if database is None:
        return {}
    device = connect(remote) if remote is not None else None
    wins, compared = {}, 0
    for task, key in keyed_tasks:
        module = task.dispatched[0]
        if not database.has_workload(module):
            continue
        records = database.get_top_k(database.commit_workload(module), 1)
        func = module["main"]
        _, ruled = first_rule(func, target)
        if not records or ruled is None:
            continue
        try:
            timers = {"record": _timer(records[0].as_measure_candidate().sch.mod["main"], target, remote=device),
                      "rule": _timer(ruled.mod["main"], target, remote=device)}
        except Exception as exc:  # a record that no longer builds: the rule wins by default
            log(f"{task.task_name[:50]}: its record does not build ({exc.__class__.__name__}); the rule is used")
            wins[key] = {"kernel": task.task_name, "rule_s": None, "record_s": None}
            continue
        best = {name: min(timer() for _ in range(rounds)) for name, timer in timers.items()}
        compared += 1
        if best["rule"] <= best["record"]:
            wins[key] = {"kernel": task.task_name, "rule_s": best["rule"], "record_s": best["record"]}
    if device is not None:
        device.close()
    write_json(os.path.join(folder, RULES_WIN_FILE), wins, indent=1, sort_keys=True)
    log(f"the default rules beat the tuned schedule on {len(wins)} of {compared} kernels; builds use the rules there")
    return wins
