"""The benchmark's contenders: the registry (a contender is one module and one line), the cells
each is timed in, OpenVINO, the TVM engines (--build, bf16, emulated precisions), whole runs on
the tiny model with real runtimes, and what the table and the plot say of a wrong contender.

No timing is asserted: speed depends on the machine and is never a test result.
"""
import json
import sys
import types

import numpy as np
import pytest

from svtr_toolkit import bench
from svtr_toolkit.bench import contenders, driver
from svtr_toolkit.bench.contenders import Entry, tvm_contender
from svtr_toolkit.errors import ToolkitError

FAKE_PEAK = {"gemm_n": 8, "repeats": 1, "cores": 1, "fp32_probe": "fake", "all_cores_flops": 1e9,
             "one_core_flops": 1e9, "fp16_arithmetic": False, "fp16_probe": None, "fp16_flops": None}


@pytest.fixture
def no_peak_probe(monkeypatch):
    """The peak probe compiles and times GEMMs for seconds; these tests are about the contenders."""
    monkeypatch.setattr(driver, "measure_peak", lambda *a, **k: dict(FAKE_PEAK))


class FakeBackend:
    def __init__(self, batch=None):
        self.input_shape = (batch, 3, 64, 256)


def run(model, batches=(2,), **kwargs):
    kwargs.setdefault("log", lambda *_: None)
    return bench.run_benchmark(model, list(batches), rounds=1, min_sample_s=1e-3, progress=False, **kwargs)


# ----------------------------------------------------------------------------- cells
def test_the_reference_sweeps_and_meets_every_contender_at_its_batch():
    entries = [Entry(bench.ORT_NAME, FakeBackend(), reference=True), Entry("fp32", FakeBackend(32), batch=32),
               Entry("odd", FakeBackend(16), batch=16), Entry("any", FakeBackend())]
    cells = bench.plan_cells(entries, [1, 32])
    got = [(c.contender, c.batch) for c in cells]
    assert got == [(bench.ORT_NAME, 1), (bench.ORT_NAME, 32), (bench.ORT_NAME, 16), ("fp32", 32), ("odd", 16),
                   ("any", 1), ("any", 32)]
    notes = {(c.contender, c.batch): c.note for c in cells}
    assert notes[("fp32", 32)] == "" and notes[(bench.ORT_NAME, 32)] == ""
    assert "not in the sweep" in notes[("odd", 16)] and "extra" in notes[(bench.ORT_NAME, 16)]


def test_a_contender_twice_at_one_batch_is_refused():
    with pytest.raises(ToolkitError, match="twice"):
        bench.plan_cells([Entry("e", FakeBackend(8), batch=8), Entry("e", FakeBackend(8), batch=8)], [8])


def test_a_model_with_a_fixed_batch_runs_only_at_it():
    setup = contenders.Setup("m.onnx", (3, 64, 256), [1, 8, 32], 1, FakeBackend(32))
    assert setup.model_batches == [32]
    cells = bench.plan_cells([Entry(bench.ORT_NAME, FakeBackend(32), batch=32, reference=True)], [1, 8, 32])
    assert [(c.contender, c.batch) for c in cells] == [(bench.ORT_NAME, 32)]


# ----------------------------------------------------------------------------- the registry
def test_every_registered_contender_is_a_module_with_the_three_functions():
    for name in contenders.REGISTRY:
        module = contenders.load(name)
        assert callable(module.version) and callable(module.unavailable) and callable(module.entries)
        assert module.unavailable() is None, name  # all three are in requirements.txt
    assert set(contenders.versions()) == set(contenders.REGISTRY)
    with pytest.raises(ToolkitError, match="unknown contender 'nope'"):
        contenders.load("nope")


def test_a_new_contender_is_one_module_and_one_registry_line(monkeypatch, tiny, no_peak_probe):
    """A module that answers a constant (uniform probabilities): registered by one line, it is
    timed, checked against onnxruntime fp32 like any other, and marked wrong."""
    module = types.ModuleType("svtr_toolkit.bench.contenders.constant_contender")

    class Constant:
        input_shape = (2, 3, 8, 16)

        def run(self, batch):
            return np.full((len(batch), 4, 5), 0.2, np.float32)

    module.version = lambda: "1.0"
    module.unavailable = lambda: None
    module.entries = lambda setup: [Entry("constant", Constant(), batch=2)]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(contenders.REGISTRY, "constant", "constant_contender")

    report = run(tiny, contenders=["onnxruntime", "constant"])
    rows = {r["contender"]: r for r in report["results"]}
    assert set(rows) == {bench.ORT_NAME, "constant"} and report["machine"]["versions"]["constant"] == "1.0"
    assert rows["constant"]["median_img_per_s"] > 0 and rows["constant"]["argmax_agreement"] < bench.WRONG_BELOW
    assert "wrong:" in next(line for line in bench.format_table(report["results"]).splitlines()
                            if line.startswith("constant"))


def test_a_contender_that_cannot_run_here_is_left_out_with_a_line(monkeypatch, tiny, no_peak_probe):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    module = contenders.load("openvino")
    assert "pip install openvino==" in module.unavailable() and module.version() is None
    lines = []
    report = run(tiny, contenders=["onnxruntime", "openvino"], log=lines.append)
    assert {r["contender"] for r in report["results"]} == {bench.ORT_NAME}
    assert any(line.startswith("openvino not timed: openvino is not installed") for line in lines)


# ----------------------------------------------------------------------------- OpenVINO
def test_openvino_runs_in_both_settings_and_says_what_it_computes_in(tiny, x):
    from svtr_toolkit.numerics import compare
    from svtr_toolkit.runtime import OrtBackend
    from tiny_models import ort_run

    setup = contenders.Setup(tiny, x.shape[1:], [x.shape[0]], 1, OrtBackend(tiny), log=lambda *_: None)
    entries = {e.name: e for e in contenders.load("openvino").entries(setup)}
    assert set(entries) == {"openvino-fp32", "openvino-default"}
    fp32 = entries["openvino-fp32"]
    assert fp32.backend.config == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                   "INFERENCE_NUM_THREADS": 1}
    assert fp32.arithmetic == fp32.backend.computes_in == "fp32" and fp32.batch == x.shape[0]
    parity = compare(fp32.backend.run(x), ort_run(tiny, x))
    assert parity.argmax_agreement == 1.0 and parity.max_abs_diff < 1e-4, parity
    default = entries["openvino-default"]
    assert "INFERENCE_PRECISION_HINT" not in default.backend.config
    assert default.arithmetic == default.backend.computes_in in ("fp32", "bf16", "fp16")


# ----------------------------------------------------------------------------- TVM engines: --build
def test_sweep_builds_auto_and_no_database_engines_when_a_database_fits(monkeypatch, tmp_path):
    import tvm

    from svtr_toolkit.compile.tuning.selection import MANIFEST, manifest, workload_key
    from svtr_toolkit.cpu_features import host

    db = tmp_path / "tuning" / "this-cpu"
    db.mkdir(parents=True)
    workloads = [workload_key("x", (8, 3, 64, 256), "fp32")]
    (db / MANIFEST).write_text(json.dumps(manifest(host(), tvm.__version__, workloads)))
    monkeypatch.setenv("SVTR_TUNING_DIR", str(tmp_path / "tuning"))
    lines = []
    plans = tvm_contender.plan_builds("x", (3, 64, 256), [1, 8], ["fp32"], "eng", "svtr", log=lines.append)
    assert [(p["contender"], p["batch"], p["tuning_dir"]) for p in plans] == [
        ("tvm-fp32", 1, "auto"), ("tvm-fp32-nodb", 1, None), ("tvm-fp32", 8, "auto"), ("tvm-fp32-nodb", 8, None)]
    assert [p["path"] for p in plans[:2]] == ["eng/svtr_bs_1_fp32_autodb.so", "eng/svtr_bs_1_fp32_nodb.so"]
    assert plans[2]["shape"] == [8, 3, 64, 256] and not lines
    assert all(p["note"] == "" for p in plans)
    assert {p["path"] for p in plans} <= set(tvm_contender.planned_paths("eng", "svtr", [1, 8], ["fp32"]))


def test_sweep_builds_once_when_no_database_fits(monkeypatch, tmp_path):
    monkeypatch.setenv("SVTR_TUNING_DIR", str(tmp_path / "empty"))
    lines = []
    plans = tvm_contender.plan_builds("x", (3, 64, 256), [1, 8], ["fp32", "bf16"], "eng", "svtr", log=lines.append)
    assert [(p["contender"], p["batch"]) for p in plans] == [
        ("tvm-fp32-nodb", 1), ("tvm-fp32-nodb", 8), ("tvm-bf16-nodb", 1), ("tvm-bf16-nodb", 8)]
    assert all(p["tuning_dir"] is None and p["path"].endswith(f"_bs_{p['batch']}_{p['precision']}_nodb.so")
               for p in plans)
    assert len(lines) == 2 and all("same build" in line and "timed once" in line for line in lines)


def test_sweep_adds_one_fp16_engine_per_chunk_setting(monkeypatch, tmp_path):
    from svtr_toolkit.compile.fp16_accumulate import parse_variants

    monkeypatch.setenv("SVTR_TUNING_DIR", str(tmp_path / "empty"))
    variants = parse_variants("off,32,none")
    plans = tvm_contender.plan_builds("x", (3, 64, 256), [8], ["fp32"], "eng", "svtr", log=lambda *_: None,
                                      fp16_variants=variants)
    assert [(p["contender"], p["precision"], p["accumulate"]) for p in plans[1:]] == [
        ("tvm-fp16-fp32arith", "fp16", {"mode": "off", "chunk": None}),
        ("tvm-fp16-k32", "fp16", {"mode": "on", "chunk": 32}),
        ("tvm-fp16-wholeK", "fp16", {"mode": "on", "chunk": 0})]
    assert [p["path"] for p in plans[1:]] == ["eng/svtr_bs_8_fp16_fp32arith.so", "eng/svtr_bs_8_fp16_k32.so",
                                              "eng/svtr_bs_8_fp16_wholeK.so"]


@pytest.mark.parametrize("meta, arithmetic, emulated", [
    ({"precision": "fp32", "arithmetic": "fp32"}, "fp32", False),
    ({"precision": "fp16", "arithmetic": "fp32 (fp16 values: emulated)"}, "fp32", True),
    ({"precision": "fp16", "arithmetic": "fp16 (K-chunked, fp32 sums)"}, "fp16", False),
    ({"precision": "fp16", "arithmetic": "fp16 (every operation emulated)"}, "fp16", True),
    ({"precision": "bf16", "arithmetic": "bf16 matrix products (AMX tiles, fp32 sums), fp32 elsewhere"}, "bf16", False),
    ({"precision": "fp16", "fp16_accumulate": {"chunk": 64}}, "fp16", False),  # built before `arithmetic`
    ({"precision": "fp16", "fp16_accumulate": None}, "fp32", False),
])
def test_what_an_engine_computes_in_comes_from_its_build_description(meta, arithmetic, emulated):
    assert tvm_contender.peak_arithmetic(meta) == arithmetic and tvm_contender.emulated(meta) == emulated


# ----------------------------------------------------------------------------- whole runs, tiny model
def test_run_reports_correctness_for_every_contender(tiny, built, tmp_path, no_peak_probe):
    """onnxruntime, a TVM engine and OpenVINO on the tiny model: every result and the JSON carry
    argmax agreement and max |diff| against onnxruntime fp32."""
    engine_path, _ = built
    report = run(tiny, engine_specs=[("tvm-fp32", engine_path)])
    results = report["results"]
    assert {r["contender"] for r in results} == {bench.ORT_NAME, "tvm-fp32", "openvino-fp32", "openvino-default"}
    for r in results:
        assert r["argmax_agreement"] is not None and r["max_abs_diff"] is not None, r["contender"]
        if r["arithmetic"] == "fp32":
            assert r["argmax_agreement"] == 1.0 and r["max_abs_diff"] < 1e-4, r
    assert {(p["contender"], p["batch"]) for p in report["parity"]} == {(r["contender"], r["batch"]) for r in results}
    assert report["settings"]["engines"] == [{"name": "tvm-fp32", "path": engine_path}]
    loaded = json.loads(open(bench.write_json(report, str(tmp_path))).read())
    assert all("argmax_agreement" in p and "max_abs_diff" in p for p in loaded["parity"])

    without_reference = run(tiny, contenders=["tvm"], engine_specs=[("tvm-fp32", engine_path)])
    (row,) = without_reference["results"]  # still checked against onnxruntime, which is not timed
    assert row["contender"] == "tvm-fp32" and row["argmax_agreement"] == 1.0 and row["ratio_to_ort"] is None


def test_bf16_and_fp16_plans_are_built_timed_and_the_emulated_ones_say_so(monkeypatch, tiny, tmp_path, no_peak_probe):
    """--build --precision bf16 and --fp16_chunks off,32 on the tiny model: each engine is built as
    asked, timed, checked, set against the peak of what it computes in, and marked emulated
    exactly where its build description says so (in the table's note and the plot's legend)."""
    from svtr_toolkit.compile.fp16_accumulate import parse_variants
    from svtr_toolkit.runtime import load_engine

    monkeypatch.setenv("SVTR_TUNING_DIR", str(tmp_path / "no-databases"))
    report = run(tiny, contenders=["onnxruntime", "tvm"], build=True, precisions=["bf16"],
                 engine_dir=str(tmp_path), fp16_variants=parse_variants("off,32"))
    rows = {r["contender"]: r for r in report["results"]}
    assert set(rows) == {bench.ORT_NAME, "tvm-bf16-nodb", "tvm-fp16-fp32arith", "tvm-fp16-k32"}
    built = {b["contender"]: load_engine(b["path"]).metadata for b in report["settings"]["tvm_builds"]}
    assert built["tvm-bf16-nodb"]["precision"] == "bf16"
    assert built["tvm-fp16-fp32arith"]["fp16_accumulate"] is None
    assert built["tvm-fp16-k32"]["fp16_accumulate"] == {"chunk": 32}
    table = {line.split(" |")[0].strip(): line for line in bench.format_table(report["results"]).splitlines()}
    for name, meta in built.items():
        says = "emulated" in (meta.get("arithmetic") or "")
        assert rows[name]["emulated"] == says and ("emulated" in table[name]) == says, (name, meta.get("arithmetic"))
        assert rows[name]["arithmetic"] == tvm_contender.peak_arithmetic(meta)
        assert rows[name]["median_img_per_s"] > 0 and rows[name]["argmax_agreement"] >= 0.9, rows[name]
        legend = bench.legend_label(name, [rows[name]])
        assert ("(emulated" in legend) == says, legend
    assert rows["tvm-fp16-fp32arith"]["emulated"]  # fp16 values in fp32 arithmetic, on any CPU


# ----------------------------------------------------------------------------- wrong contenders
def _checked(name, batch, img_s, agreement, emulated=False):
    from svtr_toolkit.numerics import Parity

    parity = Parity(rows=batch, steps=25, max_abs_diff=0.5, cosine=1.0, argmax_agreement=agreement)
    cell = bench.Cell(name, batch, None, calls=1, samples_s=[batch / v for v in img_s], parity=parity,
                      emulated=emulated)
    return bench.cell_result(cell)


@pytest.mark.parametrize("agreement, label", [(1.0, ""), (0.99, ""), (0.9899, "wrong: 98 % argmax"),
                                              (0.12, "wrong: 12 % argmax"), (None, "")])
def test_under_99_percent_argmax_agreement_is_wrong(agreement, label):
    assert bench.wrong_label(agreement) == label


def test_the_table_and_the_plot_mark_a_wrong_contender(tmp_path):
    results = [_checked(bench.ORT_NAME, b, [100.0 * b], 1.0) for b in (1, 32)]
    results += [_checked("openvino-default", 1, [500.0], 0.995), _checked("openvino-default", 32, [9000.0], 0.125)]
    results += [_checked("tvm-fp16", 32, [3000.0], 1.0, emulated=True)]
    bench.add_comparisons(results, 728e6, 200e9)
    table = bench.format_table(results).splitlines()
    wrong_rows = [line for line in table if line.startswith("openvino-default")]
    assert "wrong: 12 % argmax" in wrong_rows[1] and "wrong" not in wrong_rows[0]
    assert "emulated" in next(line for line in table if line.startswith("tvm-fp16"))
    assert not any("wrong" in line or "emulated" in line for line in table if line.startswith(bench.ORT_NAME))

    ax = bench.plot_figure(results).axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert sorted(legend) == sorted([bench.ORT_NAME, "openvino-default (wrong: 12 % argmax)", "tvm-fp16 (emulated)"])
    drawn = {container.get_label(): container.lines[0] for container in ax.containers}  # each errorbar's data line
    wrong = drawn["openvino-default (wrong: 12 % argmax)"]
    assert (wrong.get_linestyle(), wrong.get_markerfacecolor()) == ("--", "none")  # dashed, hollow
    for name in (bench.ORT_NAME, "tvm-fp16 (emulated)"):
        assert drawn[name].get_linestyle() == "-" and drawn[name].get_markerfacecolor() != "none"
    png = bench.write_plot(results, str(tmp_path))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- the machine
def test_the_machine_is_read_through_cpu_features(monkeypatch):
    from pathlib import Path

    from svtr_toolkit.bench import machine
    from svtr_toolkit.cpu_features import parse_cpuinfo

    recorded = (Path(__file__).parent / "data" / "cpuinfo" / "amd_epyc_zen4_avx512.txt").read_text()
    cpu = parse_cpuinfo(recorded, cores=3)
    monkeypatch.setattr(machine, "host", lambda: cpu)
    info = machine.machine_info({"onnxruntime": "1.0"})
    assert cpu.model and info["cpu"] == cpu.model and info["cores_available"] == 3
    assert info["cpu_features"] == cpu.describe()
    assert info["cpu_flags"] == [f for f in machine.NOTED_FEATURES if f in cpu.features]
    assert info["versions"] == {"onnxruntime": "1.0"}
