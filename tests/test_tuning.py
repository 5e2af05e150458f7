"""MetaSchedule tuning: plan, resumable progress, and the build applying the database."""
import json
import os
import time

import onnx
import pytest

from svtr_toolkit import runtime
from svtr_toolkit.compile import build, onnx_passes, targets, tuning
from svtr_toolkit.compile.tuning import planning
from svtr_toolkit.compile.tuning.coverage import task_key
from svtr_toolkit.compile.tuning.database import INFLIGHT_FILE, STUCK_FILE
from svtr_toolkit.errors import ToolkitError
from svtr_toolkit.evaluate import parity
from svtr_toolkit.numerics import random_batch
from tiny_models import tiny_recogniser

SHAPE = (2, 3, 8, 16)


class FakeTask:
    def __init__(self, flops, weight):
        self.flops, self.weight = flops, weight


def test_trial_plan_spends_on_heavy_kernels(monkeypatch):
    monkeypatch.setattr(planning, "task_flops", lambda t: t.flops)
    tasks = [FakeTask(900, 1), FakeTask(5, 2), FakeTask(80, 1)]  # shares 0.9, 0.01, 0.08
    assert tuning.trial_plan(tasks, 64, 8) == [64, 64, 64]
    tasks = [FakeTask(990, 1), FakeTask(1, 2), FakeTask(8, 1)]  # 0.002 is light
    assert tuning.trial_plan(tasks, 64, 8) == [64, 8, 64 if 8 / 1000 >= 0.01 else 8]
    assert tuning.trial_plan([FakeTask(1, 1), FakeTask(1000, 1)], 4, 8) == [4, 4]  # light never exceeds heavy


def test_trial_plan_also_spends_on_kernels_slow_for_their_flops(monkeypatch):
    monkeypatch.setattr(planning, "task_flops", lambda t: t.flops)
    tasks = [FakeTask(990, 1), FakeTask(1, 2), FakeTask(9, 1)]  # the second is 0.2 % of the FLOPs
    assert tuning.trial_plan(tasks, 64, 8) == [64, 8, 8]
    # ... but measured at 2 x 0.3 s of 1.7 s: a third of the time
    assert tuning.trial_plan(tasks, 64, 8, seconds=[1.0, 0.3, 0.001]) == [64, 64, 8]
    assert tuning.trial_plan(tasks, 64, 8, seconds=[1.0, None, None]) == [64, 8, 8]  # unmeasured: FLOPs decide


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tuning")
    model = tiny_recogniser(folder / "tiny.onnx")
    prepared = onnx_passes.prepare_onnx(onnx.load(model), "x", SHAPE)
    target = targets.select_target("llvm")
    mod, _ = build.relax_module(prepared, "x", SHAPE, "fp32", target.spec, None)  # the build's module
    db = str(folder / "db")
    first = tuning.tune(mod, target.tvm_target(), db, time_budget_s=600, trials_per_task=2, light_trials=1,
                        log=lambda *_: None)
    return model, mod, target, db, first


def test_tuning_fills_a_resumable_database(tuned):
    _, mod, target, db, first = tuned
    assert first["remaining_trials"] == 0 and first["tasks"] > 3
    assert os.path.getsize(os.path.join(db, "database_tuning_record.json")) > 0
    progress = json.load(open(os.path.join(db, "progress.json")))
    assert len(progress) == first["tasks"] and all(v >= 1 for v in progress.values())
    again = tuning.tune(mod, target.tvm_target(), db, time_budget_s=600, trials_per_task=2, light_trials=1)
    assert again["remaining_trials"] == 0 and again["seconds"] < first["seconds"]
    assert json.load(open(os.path.join(db, "progress.json"))) == progress, "nothing re-tuned on resume"


def test_a_round_left_in_flight_is_skipped_from_then_on(tuned, tmp_path, monkeypatch):
    from tvm.s_tir import meta_schedule as ms

    _, mod, target, _, _ = tuned
    db = str(tmp_path / "db")
    searched = []  # MetaSchedule itself is not under test here: record what it would search
    monkeypatch.setattr(ms.relax_integration, "extracted_tasks_to_tune_contexts", lambda tasks, work_dir: (tasks, [1]))
    monkeypatch.setattr(ms, "tune_tasks", lambda tasks, **_: searched.extend(t.task_name for t in tasks))
    tasks = tuning.extract_tasks(mod, target.tvm_target())
    hung = max(tasks, key=lambda t: tuning.task_flops(t) * t.weight)  # the first one tuned
    os.makedirs(db)
    with open(os.path.join(db, INFLIGHT_FILE), "w") as fh:  # as a killed run leaves it
        json.dump({task_key(hung): hung.task_name}, fh)
    messages = []
    summary = tuning.tune(mod, target.tvm_target(), db, time_budget_s=600, trials_per_task=1, light_trials=1,
                          log=messages.append)
    assert summary["remaining_trials"] == 0
    assert not os.path.exists(os.path.join(db, INFLIGHT_FILE))
    assert json.load(open(os.path.join(db, STUCK_FILE))) == {task_key(hung): hung.task_name}
    progress = json.load(open(os.path.join(db, "progress.json")))
    assert task_key(hung) not in progress and len(progress) == len(tasks) - 1
    assert any(m.startswith(f"skipping {hung.task_name[:20]}") for m in messages)
    assert hung.task_name not in searched and len(searched) == len(tasks) - 1


def test_compaction_drops_a_record_tvm_cannot_read_back(tuned, tmp_path):
    import shutil

    _, mod, target, db, _ = tuned
    copy = str(tmp_path / "db")
    shutil.copytree(db, copy)
    records = os.path.join(copy, "database_tuning_record.json")
    lines = open(records).read().splitlines()
    broken = json.loads(lines[0])  # a trace naming a block the kernel does not have, as TVM sometimes writes
    next(inst for inst in broken[1][0][0] if inst[0] == "GetSBlock")[2][0] = "no_such_block"
    with open(records, "a") as fh:
        fh.write(json.dumps(broken) + "\n")
    with pytest.raises(Exception):
        tuning.open_database(copy)
    messages = []
    tuning.compact(copy, log=messages.append)
    assert messages == ["dropped 1 tuning record(s) that MetaSchedule could not read back"]
    assert tuning.coverage(mod, target.tvm_target(), copy) == tuning.coverage(mod, target.tvm_target(), db)


def test_compaction_keeps_the_records_when_the_workloads_are_unreadable(tuned, tmp_path):
    import shutil

    from svtr_toolkit.errors import ToolkitError

    copy = str(tmp_path / "db")
    shutil.copytree(tuned[3], copy)
    with open(os.path.join(copy, "database_workload.json"), "a") as fh:
        fh.write('["0", "not a workload"]\n')
    records = open(os.path.join(copy, "database_tuning_record.json")).read()
    with pytest.raises(ToolkitError, match="cannot read the workloads"):
        tuning.compact(copy, log=lambda *_: None)
    assert open(os.path.join(copy, "database_tuning_record.json")).read() == records


def test_zero_budget_tunes_nothing(tuned, tmp_path):
    _, mod, target, _, _ = tuned
    summary = tuning.tune(mod, target.tvm_target(), str(tmp_path / "db"), time_budget_s=0, trials_per_task=2)
    assert summary["remaining_trials"] > 0
    assert not (tmp_path / "db" / "progress.json").exists()


def test_build_applies_the_database_and_tracks_it(tuned, tmp_path):
    model, mod, target, db, _ = tuned
    beaten = tuning.rules_win(db)  # written by the tuning run: records the default rules beat
    assert all(w["rule_s"] is None or w["rule_s"] <= w["record_s"] for w in beaten.values())
    hit, total, _ = tuning.coverage(mod, target.tvm_target(), db)
    assert hit + len(beaten) == total  # every kernel was tuned; the build skips the beaten records
    path = str(tmp_path / "tuned.so")
    messages = []
    meta = build.build_engine(model, "x", SHAPE, "fp32", target, path, log=messages.append, tuning_dir=db)
    assert any(f"{hit}/{total} kernels" in m for m in messages)
    assert meta["tuning_db"] == tuning.database_digest(db)
    result = parity.check(runtime.load_engine(path), model, random_batch(SHAPE))
    assert result.max_abs_diff <= 1e-5 and result.argmax_agreement == 1.0

    assert meta["schedules"]["database"] == hit and not meta["schedules"]["unscheduled"]

    messages.clear()
    meta = build.build_engine(model, "x", SHAPE, "fp32", target, path, log=messages.append, tuning_dir=None)
    assert any("tuning database changed" in m for m in messages)
    assert any("tuning database not used (turned off)" in m for m in messages)
    assert meta["schedules"]["database"] == 0 and not meta["schedules"]["unscheduled"]

    with pytest.raises(ToolkitError, match="does not exist"):
        build.build_engine(model, "x", SHAPE, "fp32", target, str(tmp_path / "other.so"), log=messages.append,
                           tuning_dir=str(tmp_path / "no-such-database"))


def test_a_database_named_by_hand_for_another_cpu_is_refused(tuned, tmp_path):
    import shutil

    from svtr_toolkit.cpu_features import CpuFeatures, host
    from svtr_toolkit.compile.tuning import selection

    model, _, target, db, _ = tuned
    other = str(tmp_path / "other-cpu")
    shutil.copytree(db, other)
    arch = "aarch64" if host().arch == "x86_64" else "x86_64"
    with open(os.path.join(other, selection.MANIFEST), "w") as fh:
        json.dump(selection.manifest(CpuFeatures(arch, frozenset({"neon"}), cores=2), "0.27.0", ["x"]), fh)
    with pytest.raises(ToolkitError, match=f"cannot be used on this CPU: tuned on {arch}"):
        build.build_engine(model, "x", SHAPE, "fp32", target, str(tmp_path / "e.so"), log=lambda *_: None,
                           tuning_dir=other)


def test_shipped_database_covers_svtr_on_its_cpu_class(golden_export):
    """Each database in tuning/ that lists the SVTR fp32 batch-32 workload must schedule it
    (a property of the database: checked on any host, with the target it was tuned for)."""
    from svtr_toolkit.compile.tuning import selection
    from svtr_toolkit.prepare import export

    import tvm

    shape = (32, 3, 64, 256)
    root = tuning.DEFAULT_TUNING_ROOT
    folders = [info for info in (selection.DatabaseInfo.read(os.path.join(root, d)) for d in sorted(os.listdir(root))
                                 if os.path.isdir(os.path.join(root, d)))
               if info and selection.workload_key("x", shape, "fp32") in info.workloads]
    if not folders:
        pytest.skip("no shipped database lists x:32,3,64,256 fp32")
    prepared = onnx_passes.prepare_onnx(onnx.load(str(golden_export.out_dir / export.OPT_ONNX)), "x", shape)
    for info in folders:
        mattr = [f"+{f}" for f in sorted(info.features)]
        spec = {"kind": "llvm", "mcpu": "x86-64", "num-cores": info.cores, "mattr": mattr}
        mod, _ = build.relax_module(prepared, "x", shape, "fp32", spec, None)
        target = tvm.target.Target(spec)
        hit, total, fraction = tuning.coverage(mod, target, info.folder)
        assert fraction >= 0.95, f"{info.folder}: {hit}/{total} kernels, {fraction:.1%} of FLOPs"


def _sleep_then_name(seconds):
    if seconds < 0:
        raise ValueError("bad candidate")
    time.sleep(seconds)
    return f"artifact-{seconds}"


def test_candidates_build_side_by_side_and_a_slow_one_is_killed():
    from svtr_toolkit.compile.tuning.builder import build_in_children

    start = time.monotonic()
    done = build_in_children([1.0, 1.0], _sleep_then_name, timeout_s=30, workers=2)
    assert done == [("ok", "artifact-1.0"), ("ok", "artifact-1.0")]
    assert time.monotonic() - start < 1.9, "two 1 s builds with two workers run at once"

    start = time.monotonic()
    done = build_in_children([60.0, -1, 0.0], _sleep_then_name, timeout_s=1.5, workers=1)
    assert done[0] == ("error", "build timed out after 2 s") and done[2] == ("ok", "artifact-0.0")
    assert done[1] == ("error", "ValueError: bad candidate")
    assert time.monotonic() - start < 20


def test_tuning_loads_the_cpu_tensor_intrinsics_only():
    """MetaSchedule's TuneContext imports every target's tensor intrinsics (seconds of TVMScript
    parsing, CUDA's most of it); the tuner loads the CPU ones first, and the rest stay importable."""
    code = (
        "import sys\n"
        "from svtr_toolkit.compile.tuning.loop import _load_cpu_tensor_intrinsics\n"
        "_load_cpu_tensor_intrinsics()\n"
        "from tvm.s_tir import TensorIntrin\n"
        "from tvm.s_tir.meta_schedule import TuneContext\n"
        "TuneContext(target='llvm')\n"
        "assert TensorIntrin.get('dot_16x4_vnni') is not None\n"
        "assert 'tvm.s_tir.tensor_intrin.cuda' not in sys.modules\n"
        "import tvm.s_tir.tensor_intrin.cuda\n"
        "print('ok')\n")
    import sys

    from cli_runs import run_process

    done = run_process([sys.executable, "-c", code], timeout=300)
    assert done.code == 0 and done.out.strip() == "ok", done.err
