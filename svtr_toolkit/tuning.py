"""MetaSchedule tuning for the CPU engine: resumable, time-bounded, one JSON database per CPU class.

The engine's Relax module is lowered as far as the default CPU pipeline lowers it before
scheduling (legalise + fuse), the fused kernels become tuning tasks, and the best schedule
found for each is kept in a JSON database under ``tuning/<target key>/``. ``build_engine``
applies a database whose target key matches; kernels without a record stay unscheduled.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import time

from .errors import ToolkitError
from .files import sha256_file, write_bytes_atomically
from .targets import use_all_cpu_cores


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TUNING_ROOT = os.path.join(REPO, "tuning")


def target_key(spec: dict) -> str:
    """A folder name for the CPU class a database was tuned on, e.g. llvm-rocketlake-2c."""
    parts = [spec.get("kind", "unknown"), spec.get("mcpu") or spec.get("arch") or "generic"]
    if spec.get("num-cores"):
        parts.append(f"{spec['num-cores']}c")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(str(p) for p in parts))


def database_dir(spec: dict, root: str | None = None) -> str:
    return os.path.join(root or os.environ.get("SVTR_TUNING_DIR") or DEFAULT_TUNING_ROOT, target_key(spec))


def lowering_passes():
    """The default CPU pipeline up to scheduling: what tasks are extracted from and applied to."""
    from tvm import relax

    from .relax_passes import convs_to_nhwc

    return [
        convs_to_nhwc(),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def open_database(folder: str, create: bool = False):
    from tvm.s_tir import meta_schedule as ms

    workload = os.path.join(folder, "database_workload.json")
    records = os.path.join(folder, "database_tuning_record.json")
    if not create and not os.path.isfile(records):
        return None
    os.makedirs(folder, exist_ok=True)
    return ms.database.JSONDatabase(path_workload=workload, path_tuning_record=records, allow_missing=create)


STUCK_FILE = "stuck.json"  # kernels whose tuning round never finished: skipped from then on
INFLIGHT_FILE = "inflight.json"  # the kernel being tuned right now


def _load_stuck(folder: str, log) -> dict:
    """Kernels to skip; a round left in flight by a killed run joins them.

    MetaSchedule's candidate search runs in C++ and can spin for many minutes on some
    kernels; the time budget is only checked between rounds, so such a run has to be
    killed, and the next one must not walk into the same kernel again.
    """
    stuck_path, inflight_path = os.path.join(folder, STUCK_FILE), os.path.join(folder, INFLIGHT_FILE)
    stuck = {}
    if os.path.isfile(stuck_path):
        with open(stuck_path) as fh:
            stuck = json.load(fh)
    if os.path.isfile(inflight_path):
        with open(inflight_path) as fh:
            left = json.load(fh)
        stuck.update(left)
        _write_json(stuck_path, stuck)
        os.remove(inflight_path)
        for name in left.values():
            log(f"skipping {_short(name)}: its last tuning round never finished (killed while MetaSchedule searched); "
                f"delete it from {stuck_path} to try again")
    return stuck


def _short(name: str, width: int = 60) -> str:
    """Fused-kernel names run to hundreds of characters."""
    return name if len(name) <= width else name[:width - 3] + "..."


def _write_json(path: str, value) -> None:
    write_bytes_atomically(path, json.dumps(value, indent=0, sort_keys=True).encode())


def _loads(workloads: str, records: list) -> bool:
    """Whether MetaSchedule can read these record lines back against the workload file."""
    import tempfile

    from tvm.s_tir import meta_schedule as ms

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "records.json")
        with open(path, "w") as fh:
            fh.write("".join(line + "\n" for line in records))
        try:
            ms.database.JSONDatabase(path_workload=workloads, path_tuning_record=path, allow_missing=False)
        except Exception:
            return False
    return True


def drop_unreadable_records(folder: str) -> int:
    """Remove the record lines MetaSchedule cannot read back; return how many.

    TVM 0.27 sometimes writes a record for a reduction kernel whose trace fails to replay
    when the file is loaded, and one such line makes the whole database unreadable (for
    the next build too). Records are checked per kernel, then line by line in a bad kernel.
    """
    workloads = os.path.join(folder, "database_workload.json")
    path = os.path.join(folder, "database_tuning_record.json")
    if not _loads(workloads, []):  # then every record would look bad: keep them all
        raise ToolkitError(f"MetaSchedule cannot read the workloads of the tuning database {folder}")
    with open(path) as fh:
        lines = [line.rstrip("\n") for line in fh if line.strip()]
    by_kernel = {}
    for number, line in enumerate(lines):
        by_kernel.setdefault(json.loads(line)[0], []).append(number)
    bad = set()
    for numbers in by_kernel.values():
        if not _loads(workloads, [lines[n] for n in numbers]):
            bad |= {n for n in numbers if not _loads(workloads, [lines[n]])}
    if bad:
        write_bytes_atomically(path, "".join(line + "\n" for n, line in enumerate(lines) if n not in bad).encode())
    return len(bad)


def compact(folder: str, log=print) -> None:
    """Keep only the best record per kernel: what builds use, and a far smaller file to ship.

    The pruned database is written beside the folder and swapped in whole, so an
    interruption leaves either the old or the new database, never a mix of their files.
    """
    import shutil

    from tvm.s_tir import meta_schedule as ms

    try:
        database = open_database(folder)
    except Exception:
        dropped = drop_unreadable_records(folder)
        log(f"dropped {dropped} tuning record(s) that MetaSchedule could not read back")
        database = open_database(folder)
    if database is None:
        return
    staging = folder.rstrip("/") + ".compacting"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    database.dump_pruned(ms.database.JSONDatabase(
        path_workload=os.path.join(staging, "database_workload.json"),
        path_tuning_record=os.path.join(staging, "database_tuning_record.json"), allow_missing=True))
    for name in ("progress.json", STUCK_FILE, INFLIGHT_FILE):
        if os.path.isfile(os.path.join(folder, name)):
            shutil.copy2(os.path.join(folder, name), staging)
    old = folder.rstrip("/") + ".old"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old)


def database_digest(folder: str) -> str | None:
    """Identifies the database contents an engine was built with (None when there is none)."""
    records = os.path.join(folder, "database_tuning_record.json")
    return sha256_file(records) if os.path.isfile(records) else None


def extract_tasks(mod, target):
    import tvm
    from tvm.s_tir import meta_schedule as ms

    with target:
        lowered = tvm.transform.Sequential(lowering_passes())(mod)
    return ms.relax_integration.extract_tasks(lowered, target)


def task_flops(task) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(task.dispatched[0]))
    except Exception:  # some kernels (e.g. with opaque calls) have no estimate
        return 0.0


def make_pipeline(target, db_folder: str | None):
    """The default CPU pipeline with the tuning database applied right after fusion."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    database = open_database(db_folder) if db_folder else None

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        passes = cpu.library_dispatch_passes(target) + lowering_passes()
        if database is not None:
            passes.append(relax.transform.MetaScheduleApplyDatabase(enable_warning=False))
        passes += cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
        with target:
            if database is not None:
                with database:
                    return tvm.transform.Sequential(passes)(mod)
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def describe_coverage(mod, target, db_folder: str | None, log=print) -> dict:
    """Say how much of the engine the database schedules, and what a miss costs.

    ``db_folder`` None means tuning was turned off; a folder without records means none
    has been made for this CPU class yet.
    """
    slow = "kernels are left unscheduled (single-threaded, scalar: typically 50-100x slower than tuned)"
    if db_folder is None:
        log(f"tuning database not used: {slow}")
        return {"database": None, "tuned_kernels": 0, "flops_covered": 0.0}
    if database_digest(db_folder) is None:
        others = sorted(os.listdir(os.path.dirname(db_folder))) if os.path.isdir(os.path.dirname(db_folder)) else []
        log(f"no tuning database for this CPU class ({os.path.basename(db_folder)}): {slow}; "
            f"run tools/tune_cpu.py to make one" + (f" (there are databases for: {', '.join(others)})" if others else ""))
        return {"database": None, "tuned_kernels": 0, "flops_covered": 0.0}
    hit, total, fraction = coverage(mod, target, db_folder)
    log(f"tuning database {os.path.relpath(db_folder)}: {hit}/{total} kernels, {100 * fraction:.1f}% of FLOPs tuned"
        + ("" if hit == total else "; the rest stay unscheduled (tune more with tools/tune_cpu.py)"))
    return {"database": os.path.abspath(db_folder), "tuned_kernels": hit, "kernels": total, "flops_covered": round(fraction, 4)}


def coverage(mod, target, db_folder: str) -> tuple[int, int, float]:
    """(tasks with a record, tasks, fraction of FLOPs covered) for this module and database."""
    database = open_database(db_folder)
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


def _forking_builder(timeout_s: float = 60.0):
    """Builds each candidate in a forked child with a deadline.

    LocalBuilder restarts its worker pool for every batch, which costs more than the builds
    on a 2-core machine; building in this process is fast but a pathological candidate can
    keep LLVM busy for many minutes. A fork per candidate is cheap (copy-on-write) and can be
    killed when it runs past ``timeout_s``.
    """
    import select
    import signal

    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    def build_one(item):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: build, report the artifact path (or the error), leave at once
            os.close(read_fd)
            try:
                message = "ok:" + default_export(default_build(item.mod, item.target, None))
            except BaseException as exc:  # any failure is just a bad candidate
                message = f"error:{exc.__class__.__name__}: {str(exc)[:500]}"
            os.write(write_fd, message.encode())
            os._exit(0)
        os.close(write_fd)
        try:
            ready, _, _ = select.select([read_fd], [], [], timeout_s)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                return BuilderResult(None, f"build timed out after {timeout_s:.0f} s")
            chunks = []
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
            message = b"".join(chunks).decode(errors="replace")
        finally:
            os.close(read_fd)
            os.waitpid(pid, 0)
        if message.startswith("ok:"):
            return BuilderResult(message[3:], None)
        return BuilderResult(None, message[6:] or "build process died")

    @derived_object
    class ForkingBuilder(PyBuilder):
        def build(self, build_inputs):
            return [build_one(item) for item in build_inputs]

    return ForkingBuilder()


def _task_key(task) -> str:
    """The kernel's structure, not its name: fused-kernel names are numbered per model, so
    the same kernel is called differently after any change elsewhere in the graph."""
    from tvm_ffi import structural_hash

    return f"{structural_hash(task.dispatched[0]) & 0xFFFFFFFFFFFF:012x}"


def trial_plan(tasks, trials_per_task: int, light_trials: int, heavy_share: float = 0.01, seconds=None) -> list:
    """Trials each task deserves: the full count for kernels with >= ``heavy_share`` of the
    FLOPs or of the measured time, a few for the light ones (elementwise and reductions find
    their schedule fast).

    ``seconds`` (per task, None where not measured yet) are the best times the database
    holds: FLOPs alone miss kernels that are slow for their size (a small strided conv, a
    softmax, an attention matmul with a 32-wide inner dimension).
    """
    weights = [task_flops(t) * t.weight for t in tasks]
    total = sum(weights) or 1.0
    times = [(s or 0.0) * t.weight for s, t in zip(seconds or [None] * len(tasks), tasks)]
    total_time = sum(times) or 1.0
    return [trials_per_task if w / total >= heavy_share or s / total_time >= heavy_share
            else min(light_trials, trials_per_task) for w, s in zip(weights, times)]


def best_seconds(database, task) -> float | None:
    """The fastest time the database holds for this kernel, or None."""
    mod = task.dispatched[0]
    if database is None or not database.has_workload(mod):
        return None
    records = database.get_top_k(database.commit_workload(mod), 1)
    return float(records[0].run_secs[0]) if records and records[0].run_secs else None


def tune(mod, target, folder: str, *, time_budget_s: float, trials_per_task: int = 64, light_trials: int = 8,
         trials_per_round: int = 16, log=print) -> dict:
    """Tune ``mod``'s kernels into the database at ``folder`` until done or out of time.

    Tasks are visited heaviest first (FLOPs x occurrences), in rounds of at most
    ``trials_per_round`` trials, so a short budget is spent where it matters. Progress is
    saved after each task, and a rerun resumes where the last one stopped.
    """
    import tempfile

    from tqdm import tqdm
    from tvm.s_tir import meta_schedule as ms

    tasks = extract_tasks(mod, target)
    tasks.sort(key=lambda t: -task_flops(t) * t.weight)
    keyed = [(t, _task_key(t)) for t in tasks]  # structural hashes: computed once, used every round
    database = open_database(folder, create=True)

    def plan() -> dict:  # redone after each pass
        seconds = [best_seconds(database, t) for t in tasks]
        return {k: n for (_, k), n in zip(keyed, trial_plan(tasks, trials_per_task, light_trials, seconds=seconds))}

    wanted = plan()
    progress_path = os.path.join(folder, "progress.json")
    progress = {}
    if os.path.isfile(progress_path):
        with open(progress_path) as fh:
            for key, trials in json.load(fh).items():  # older files keyed "name:hash"
                key = key.rsplit(":", 1)[-1]
                progress[key] = max(progress.get(key, 0), trials)
    stuck = _load_stuck(folder, log)
    skipped = [t.task_name for t, k in keyed if k in stuck]
    if skipped:
        log(f"{len(skipped)} kernel(s) skipped as stuck (see {STUCK_FILE}): " + ", ".join(_short(n) for n in skipped))
    inflight_path = os.path.join(folder, INFLIGHT_FILE)
    threads = use_all_cpu_cores()  # candidates are timed with the pool the engine will run with
    log(f"timing candidates with {threads} threads")
    start = time.monotonic()
    runner = ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=40))
    builder = _forking_builder()
    total = sum(wanted.values())
    done_before = sum(min(progress.get(k, 0), n) for k, n in wanted.items())
    bar = tqdm(total=total, initial=done_before, unit="trial", desc="tuning", file=sys.stderr)
    with tempfile.TemporaryDirectory() as logs:
        while time.monotonic() - start < time_budget_s:
            pending = [(t, k) for t, k in keyed if progress.get(k, 0) < wanted[k] and k not in stuck]
            if not pending:
                break
            for task, key in pending:
                if time.monotonic() - start >= time_budget_s:
                    break
                trials = min(trials_per_round, wanted[key] - progress.get(key, 0))
                contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts([task], work_dir=logs)
                # MetaSchedule sets its console handler's level from its logger's level on every
                # call (and then resets that logger to DEBUG): WARNING here keeps per-task tables
                # from burying the progress bar; the redirects catch what is printed directly.
                logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
                bar.set_postfix_str(task.task_name[:30])  # the kernel being searched now
                _write_json(inflight_path, {key: task.task_name})
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=logs, max_trials_global=trials,
                                  num_trials_per_iter=trials, builder=builder, runner=runner, database=database,
                                  cost_model="xgb", task_scheduler="round-robin")
                os.remove(inflight_path)
                progress[key] = progress.get(key, 0) + trials
                bar.update(trials)
                _write_json(progress_path, progress)
            wanted = plan()  # the pass's first trials can show a kernel is slow for its FLOPs
            bar.total = sum(wanted.values())
    bar.close()
    if os.path.isfile(progress_path):
        compact(folder, log)
    remaining = sum(max(0, n - progress.get(k, 0)) for k, n in wanted.items() if k not in stuck)
    return {"tasks": len(tasks), "seconds": round(time.monotonic() - start, 1), "remaining_trials": remaining}
