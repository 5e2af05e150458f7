"""Where a CPU class's MetaSchedule database lives, opening it, repairing and compacting it.

A database is a folder in MetaSchedule's JSONDatabase layout (``JSONDatabase(work_dir=)``
names its two files) plus the tuner's own state: ``progress.json``, ``stuck.json`` and,
while a kernel is being searched, ``inflight.json``.
"""
from __future__ import annotations

import json
import os

from ...errors import ToolkitError
from ...files import sha256_file, write_bytes_atomically, write_json
from ...paths import in_repo, shown
from .selection import MANIFEST

DEFAULT_TUNING_ROOT = in_repo("tuning")
# MetaSchedule's name for the records file under a work_dir: hashed to identify the database.
RECORDS_FILE = "database_tuning_record.json"
PROGRESS_FILE = "progress.json"  # trials done per kernel
STUCK_FILE = "stuck.json"  # kernels whose tuning round never finished: skipped from then on
INFLIGHT_FILE = "inflight.json"
RULES_WIN_FILE = "rules_win.json"  # kernels whose record the default rules beat: builds skip it  # the kernel being tuned right now


def tuning_root(root: str | None = None) -> str:
    return root or os.environ.get("SVTR_TUNING_DIR") or DEFAULT_TUNING_ROOT


def host_database_dir(root: str | None = None, cpu=None) -> str:
    """Where tuning for a CPU (this machine's, or ``cpu``: a remote's) writes: one folder per
    CPU class, named by architecture, widest vector ISA and core count (e.g. x86_64-avx2-2c);
    builds find databases by the ``target.json`` inside, not by this name."""
    from ...cpu_features import host

    cpu = cpu or host()
    return os.path.join(tuning_root(root), f"{cpu.arch}-{cpu.isa_level}-{cpu.cores}c")


def choose_database(workload: str | None = None, root: str | None = None, cpu=None):
    """The best database under the tuning root for this host, or for ``cpu`` (a ``selection.Choice``)."""
    import tvm

    from ...cpu_features import host
    from .selection import choose

    return choose(tuning_root(root), cpu or host(), tvm.__version__, workload)


def check_named_database(folder: str, cpu=None) -> str:
    """A database named by hand: refused when it cannot serve this CPU (or ``cpu``); returns a line to log."""
    import tvm

    from ...cpu_features import host
    from .selection import DatabaseInfo, judge

    if not os.path.isdir(folder):
        raise ToolkitError(f"tuning database {folder} does not exist")
    info = DatabaseInfo.read(folder)
    if info is None:
        return f"tuning database {folder} has no {MANIFEST}: its CPU is unknown, used as named"
    verdict = judge(info, cpu or host(), tvm.__version__)
    if not verdict.usable:
        raise ToolkitError(f"tuning database {folder} cannot be used on this CPU: {verdict.why}")
    return f"tuning database {shown(folder)}: {verdict.why}"


def record_tuned_on(folder: str, workload: str, cpu=None) -> None:
    """Write or extend ``target.json``: the CPU tuned on (this one, or ``cpu``: a remote's), this
    TVM, and one more tuned workload."""
    import tvm

    from ...cpu_features import host
    from .selection import DatabaseInfo, manifest

    info = DatabaseInfo.read(folder)
    workloads = set(info.workloads) if info else set()
    write_json(os.path.join(folder, MANIFEST), manifest(cpu or host(), tvm.__version__, workloads | {workload}),
               indent=2, sort_keys=True)


def module_key(mod) -> str:
    """A kernel module's structure, not its name: fused-kernel names are numbered per model,
    so the same kernel is called differently after any change elsewhere in the graph."""
    from tvm_ffi import structural_hash

    return f"{structural_hash(mod) & 0xFFFFFFFFFFFF:012x}"


def has_records(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, RECORDS_FILE))


def open_database(folder: str, create: bool = False):
    """The JSONDatabase in ``folder``; None when it has no records and ``create`` is off."""
    from tvm.s_tir import meta_schedule as ms

    if not create and not has_records(folder):
        return None
    os.makedirs(folder, exist_ok=True)
    return ms.database.JSONDatabase(work_dir=folder, allow_missing=create)


def database_digest(folder: str) -> str | None:
    """Identifies the database contents an engine was built with (None when there is none):
    its records and the list of kernels where the default rules beat them."""
    if not has_records(folder):
        return None
    digest = sha256_file(os.path.join(folder, RECORDS_FILE))
    wins = os.path.join(folder, RULES_WIN_FILE)
    return digest + ("+" + sha256_file(wins)[:16] if os.path.isfile(wins) else "")


def write_state(path: str, value) -> None:
    write_json(path, value, indent=0, sort_keys=True)


def short(name: str, width: int = 60) -> str:
    """Fused-kernel names run to hundreds of characters."""
    return name if len(name) <= width else name[:width - 3] + "..."


def load_stuck(folder: str, log) -> dict:
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
        write_state(stuck_path, stuck)
        os.remove(inflight_path)
        for name in left.values():
            log(f"skipping {short(name)}: its last tuning round never finished (killed while MetaSchedule searched); "
                f"delete it from {stuck_path} to try again")
    return stuck


def load_progress(folder: str) -> dict:
    """Trials done per kernel key."""
    path = os.path.join(folder, PROGRESS_FILE)
    progress = {}
    if os.path.isfile(path):
        with open(path) as fh:
            for key, trials in json.load(fh).items():  # older files keyed "name:hash"
                key = key.rsplit(":", 1)[-1]
                progress[key] = max(progress.get(key, 0), trials)
    return progress


def _loads(folder: str, records: list) -> bool:
    """Whether MetaSchedule can read these record lines back against ``folder``'s workloads."""
    import tempfile

    from tvm.s_tir import meta_schedule as ms

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, RECORDS_FILE)
        with open(path, "w") as fh:
            fh.write("".join(line + "\n" for line in records))
        try:
            ms.database.JSONDatabase(work_dir=folder, path_tuning_record=path, allow_missing=False)
        except Exception:
            return False
    return True


def drop_unreadable_records(folder: str) -> int:
    """Remove the record lines MetaSchedule cannot read back; return how many.

    TVM 0.27 sometimes writes a record for a reduction kernel whose trace fails to replay
    when the file is loaded, and one such line makes the whole database unreadable (for
    the next build too). Records are checked per kernel, then line by line in a bad kernel.
    """
    path = os.path.join(folder, RECORDS_FILE)
    if not _loads(folder, []):  # then every record would look bad: keep them all
        raise ToolkitError(f"MetaSchedule cannot read the workloads of the tuning database {folder}")
    with open(path) as fh:
        lines = [line.rstrip("\n") for line in fh if line.strip()]
    by_kernel = {}
    for number, line in enumerate(lines):
        by_kernel.setdefault(json.loads(line)[0], []).append(number)
    bad = set()
    for numbers in by_kernel.values():
        if not _loads(folder, [lines[n] for n in numbers]):
            bad |= {n for n in numbers if not _loads(folder, [lines[n]])}
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
    database.dump_pruned(ms.database.JSONDatabase(work_dir=staging, allow_missing=True))
    for name in (PROGRESS_FILE, STUCK_FILE, INFLIGHT_FILE, RULES_WIN_FILE, MANIFEST):
        if os.path.isfile(os.path.join(folder, name)):
            shutil.copy2(os.path.join(folder, name), staging)
    old = folder.rstrip("/") + ".old"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old)
