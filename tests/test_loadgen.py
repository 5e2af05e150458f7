"""inference.py --perf_only --scenario: MLPerf LoadGen's SingleStream, Offline and Server runs on
real runtimes (a TVM engine, onnxruntime, OpenVINO), LoadGen's verdict and figures in the output
and the report, and the gates (--fps_target, --latency_target_ms) with their refusals.

LoadGen's runs are processes of their own: LoadGen reads at most one user.conf per process (a
second is logged as an invalid configuration), and each run here shortens LoadGen's 600 s rule
with a user.conf. Refusals run in-process and never reach LoadGen's configuration reading.
"""
import ast
import json
import sys

import pytest

from cli_runs import run_main, run_process
from svtr_toolkit.evaluate import loadgen
from svtr_toolkit.evaluate.report import Check
from tiny_models import make_fake_onnx, write_lmdb

pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed (in requirements.txt)")
LABELS = ["hotel", "HOTEL", "grand", "pacific", "hostel", "hotel"]
# LoadGen's rules shortened to seconds; Server needs enough queries for its early-stopping rule
SHORT = "*.*.min_duration = 300\n*.*.min_query_count = 40\n*.Server.min_query_count = 600\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from svtr_toolkit.compile import build, targets

    tmp = tmp_path_factory.mktemp("loadgen")
    write_lmdb(tmp / "data" / "toy", LABELS)
    model = str(make_fake_onnx(tmp / "fake.onnx"))
    engine = str(tmp / "fake_bs_1_fp32.so")
    build.build_engine(model, "x", (1, 3, 64, 256), "fp32", targets.select_target("llvm"), engine,
                       log=lambda *_: None, tuning_dir=None)
    (tmp / "short.conf").write_text(SHORT)
    # too few queries at 100/s for Server's early-stopping rule: INVALID whatever the latencies
    (tmp / "too_few.conf").write_text("*.*.min_duration = 100\n*.Server.min_query_count = 50\n"
                                      "*.Server.target_qps = 100\n")
    return {"model": model, "engine": engine, "data": str(tmp / "data"), "tmp": tmp, "conf": str(tmp / "short.conf")}


def loadgen_run(setup, engine, batch, scenario, *argv, conf="short.conf"):
    report = setup["tmp"] / f"{scenario}_{len(argv)}.json"
    ran = run_process(["inference.py", "--engine", engine, "--batchsize", batch, "--datasets", setup["data"],
                       "--perf_only", "--scenario", scenario, "--user_conf", setup["tmp"] / conf, "--report", report,
                       "--no_progress", *argv])
    return ran, (json.loads(report.read_text()) if report.exists() else None)


def metric_result(out):
    (line,) = [ln for ln in out.splitlines() if ln.startswith("{'metricResult'")]
    return ast.literal_eval(line)["metricResult"]


# ----------------------------------------------------------------------------- runs
def test_single_stream_on_a_tvm_engine_gates_its_p90_latency(setup):
    ran, report = loadgen_run(setup, setup["engine"], 1, "SingleStream", "--latency_target_ms", 1000)
    assert ran.code == 0, ran.err
    perf = report["performance"]
    assert report["scenario"] == "SingleStream" and report["engine"]["runtime"] == "tvm"
    assert perf["valid"] and perf["settings"]["min_duration_ms"] == 300 and perf["settings"]["min_query_count"] == 40
    assert perf["settings"]["sources"]["expected_latency"] == "calibrated"
    assert perf["query_count"] >= 40 and perf["sample_count"] == perf["query_count"]  # one sample per query
    lat = perf["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert perf["target_latency_percentile"] == 0.9 and perf["target_latency_ms"] == lat["p90"]
    assert f"latency_p90_ms check: expected <= 1000.0, got {round(lat['p90'], 4)}: PASS" in ran.out
    assert "result: VALID" in ran.out and metric_result(ran.out)["loadgen"] == "VALID"
    assert report["checks"] == [{"name": "latency_p90_ms", "target": 1000.0, "value": lat["p90"], "at_most": True,
                                 "refused_by": None, "passed": True}]

    missed, _ = loadgen_run(setup, setup["engine"], 1, "SingleStream", "--latency_target_ms", 1e-6)
    assert missed.code == 1 and "latency_p90_ms check: expected <= 1e-06" in missed.out and ": FAIL" in missed.out


def test_offline_on_onnxruntime_sends_one_query_and_gates_its_throughput(setup):
    ran, report = loadgen_run(setup, setup["model"], 4, "Offline", "--fps_target", 1e9)
    assert ran.code == 1 and "fps check: expected >= 1000000000.0" in ran.out and ": FAIL" in ran.out
    perf = report["performance"]
    assert perf["query_count"] == 1 and perf["sample_count"] == perf["settings"]["samples_per_query"] > 0
    assert perf["throughput"] == perf["samples_per_second"] > 0
    assert perf["settings"]["sources"]["expected_qps"] == "calibrated"
    assert report["engine"]["runtime"] == "onnxruntime"
    assert metric_result(ran.out)["FPS"] == round(perf["throughput"], 4)


def test_server_on_openvino_holds_the_load_asked_within_the_latency_bound(setup):
    pytest.importorskip("openvino", reason="openvino is not installed (in requirements.txt)")
    ran, report = loadgen_run(setup, setup["model"], 2, "Server", "--runtime", "openvino", "--precision", "fp32",
                              "--fps_target", 200, "--latency_target_ms", 1000)
    assert ran.code == 0, (ran.out, ran.err)
    perf = report["performance"]
    assert perf["valid"], perf["invalid_reasons"]
    assert perf["settings"]["target_qps"] == 200 and perf["settings"]["target_latency_ns"] == 1000 * 1e6
    assert perf["settings"]["sources"]["target_qps"] == "--fps_target"
    assert perf["settings"]["sources"]["target_latency"] == "--latency_target_ms"
    assert perf["target_latency_percentile"] == 0.99 and perf["throughput"] == 200
    assert perf["scheduled_samples_per_second"] > 0 and perf["query_count"] >= 600
    assert "fps check: expected >= 200.0, got 200.0: PASS" in ran.out
    assert "latency_p99_ms check: expected <= 1000.0" in ran.out
    assert report["engine"]["runtime"] == "openvino" and report["engine"]["computes_in"] == "fp32"


def test_a_gated_run_that_loadgen_calls_invalid_fails(setup):
    ran, report = loadgen_run(setup, setup["model"], 2, "Server", "--latency_target_ms", 1000, conf="too_few.conf")
    perf = report["performance"]
    assert not perf["valid"] and "early stopping was not satisfied" in perf["invalid_reasons"]
    assert perf["settings"]["target_qps"] == 100 and perf["settings"]["sources"]["target_qps"] == "user.conf"
    assert ran.code == 1 and "result: INVALID (early stopping was not satisfied)" in ran.out
    assert ": FAIL (LoadGen: INVALID)" in ran.out  # the latency itself is far under 1000 ms
    assert report["checks"][0]["value"] < 1000 and not report["checks"][0]["passed"]


# ----------------------------------------------------------------------------- refusals, before any work
@pytest.mark.parametrize("argv, says", [
    (["--scenario", "Offline"], "--scenario times a --perf_only run through LoadGen; add --perf_only"),
    (["--perf_only", "--scenario", "MultiStream"], "unknown LoadGen scenario 'MultiStream'"),
    (["--perf_only", "--scenario", "SingleStream", "--fps_target", "10"],
     "--fps_target is not checked by a LoadGen SingleStream run"),
    (["--perf_only", "--scenario", "Offline", "--latency_target_ms", "10"],
     "--latency_target_ms is not checked by a LoadGen Offline run"),
    (["--perf_only", "--latency_target_ms", "10"], "--latency_target_ms is not checked by a --perf_only run of the "
                                                   "timed loop"),
    (["--latency_target_ms", "10"], "--latency_target_ms is not checked by an accuracy run"),
    (["--perf_only", "--scenario", "Server", "--latency_target_ms", "nan"],
     "argument --latency_target_ms: a finite number above 0"),
    (["--perf_only", "--scenario", "Server", "--latency_target_ms", "0"],
     "argument --latency_target_ms: a finite number above 0"),
    (["--perf_only", "--user_conf", "u.conf"], "--user_conf is not used by a --perf_only run of the timed loop"),
    (["--perf_only", "--scenario", "Offline", "--loop_count", "5"],
     "--loop_count is not used by a LoadGen Offline run"),
    (["--perf_only", "--scenario", "Offline", "--warmup", "0"], "--warmup is not used by a LoadGen Offline run"),
    (["--loop_count", "5"], "--loop_count is not used by an accuracy run"),
    (["--perf_only", "--scenario", "Offline", "--user_conf", ""], "argument --user_conf: an empty path is given"),
    (["--perf_only", "--scenario", "Offline", "--user_conf", "/nonexistent/u.conf"],
     "--user_conf not found: /nonexistent/u.conf"),
])
def test_loadgen_flags_are_refused_where_they_do_not_apply(setup, argv, says):
    ran = run_main("inference", "--engine", setup["model"], "--batchsize", 2, "--datasets", setup["data"], *argv)
    assert ran.code == 2 and says in ran.error and ran.out == "", (ran.code, ran.out, ran.err)


def test_a_user_conf_loadgen_cannot_read_is_refused_before_any_work(setup):
    bad = setup["tmp"] / "bad.conf"
    bad.write_text("*.Offline.min_duration = soon\n")
    ran = run_main("inference", "--engine", setup["model"], "--batchsize", 2, "--datasets", setup["data"],
                   "--perf_only", "--scenario", "Offline", "--user_conf", bad, "--check_args")
    assert ran.code == 2 and f"LoadGen cannot read the user.conf {bad}" in ran.error


def test_loadgen_missing_is_said_before_any_work(monkeypatch, setup):
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)  # import mlperf_loadgen -> ImportError
    ran = run_main("inference", "--engine", setup["model"], "--batchsize", 2, "--datasets", setup["data"],
                   "--perf_only", "--scenario", "Offline", "--check_args")
    assert ran.code == 2 and f"pip install mlcommons-loadgen=={loadgen.LOADGEN_VERSION}" in ran.error


# ----------------------------------------------------------------------------- pieces
def test_loadgens_log_is_read_key_by_key(tmp_path):
    log = tmp_path / "mlperf_log_detail.txt"
    log.write_text(
        ':::MLLOG {"key": "result_validity", "value": "INVALID", "metadata": {}}\n'
        'not a log line\n'
        ':::MLLOG {"key": "result_min_duration_met", "value": false, "metadata": {}}\n'
        ':::MLLOG {"key": "error_runtime", "value": "a sample was never completed", "metadata": {"is_error": true}}\n'
        ':::MLLOG {"key": "result_99.00_percentile_latency_ns", "value": 2500000, "metadata": {}}\n')
    values = loadgen.read_log(str(log))
    assert values["result_validity"] == "INVALID" and values["result_99.00_percentile_latency_ns"] == 2500000
    assert values["__messages__"] == ["LoadGen error: error_runtime: a sample was never completed"]
    result = loadgen.result_from_log(values, "Offline", 0, {}, {})
    assert result.invalid_reasons == ["the minimum duration was not reached"] and result.latency_ms["p99"] == 2.5


@pytest.mark.parametrize("fraction, name", [(0.9, "p90"), (0.99, "p99"), (0.999, "p99.9"), (0.5, "p50")])
def test_percentile_names(fraction, name):
    assert loadgen.percentile_name(fraction) == name


def test_a_latency_gate_is_an_upper_bound_and_an_invalid_run_fails_it():
    assert Check("latency_p90_ms", 10, 9.5, at_most=True).passed
    assert not Check("latency_p90_ms", 10, 10.5, at_most=True).passed
    refused = Check("latency_p90_ms", 10, 9.5, at_most=True, refused_by="LoadGen: INVALID")
    assert not refused.passed
    assert refused.line == "latency_p90_ms check: expected <= 10, got 9.5: FAIL (LoadGen: INVALID)"
