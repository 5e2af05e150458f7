"""scripts/infer_svtr_fp16_*.sh end to end, as processes: model-zoo arguments and variables passed
on to inference.py (which owns every check of their values), thresholds -> exit status.

A fake SVTR-shaped model that always reads 'hotel' stands in for SVTR_opt.onnx (MODEL_PATH),
so the scripts build a real TVM engine in seconds and the accuracy is known exactly.
"""
import pytest

from cli_runs import run_process
from tiny_models import make_fake_onnx, write_lmdb

# 'hotel' after PaddleOCR's label rules for 2 of 5 samples: accuracy 0.4
LABELS = ["hotel", "HOTEL", "grand", "pacific", "hostel"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scripts")
    write_lmdb(tmp / "data" / "evaluation" / "toy", LABELS)
    (tmp / "empty").mkdir()
    base = {"MODEL_PATH": make_fake_onnx(tmp / "fake.onnx"), "DATASETS_DIR": tmp / "data",
            "ENGINE_DIR": tmp / "engines", "TARGET": "llvm", "LOOP_COUNT": "2", "ACC_TARGET": None, "FPS_TARGET": None}
    return base, tmp


def run(script, env, *args, **overrides):
    return run_process([f"scripts/{script}", *args], env={**env, **overrides})


def test_accuracy_threshold_sets_exit_status(env):
    base, tmp = env
    met = run("infer_svtr_fp16_accuracy.sh", base, "--bs", "4", "--acc_target", "0.4")
    assert met.code == 0, met.err
    assert "expected >= 0.4, got 0.4" in met.out and "PASS" in met.out
    assert "{'metricResult': {'acc': 0.4" in met.out
    assert (tmp / "engines" / "svtr_bs_4_fp16.so").is_file()

    missed = run("infer_svtr_fp16_accuracy.sh", base, "--bs", "4", ACC_TARGET="0.41")
    assert missed.code == 1 and "FAIL" in missed.out
    assert "engine is up to date" in missed.out, "the engine from the first run is reused"


def test_performance_script_reports_fps_and_checks_it(env):
    base, _ = env
    ok = run("infer_svtr_fp16_performance.sh", base, "--bs", "4")
    assert ok.code == 0, ok.err
    assert "* Mean inference time:" in ok.out and "Mean fps:" in ok.out
    missed = run("infer_svtr_fp16_performance.sh", base, "--bs", "4", "--fps_target", "1e12")
    assert missed.code == 1 and "FAIL" in missed.out


@pytest.mark.parametrize("args, overrides, message", [
    ((), {"DATASETS_DIR": None}, "DATASETS_DIR is not set"),
    ((), {"DATASETS_DIR": "EMPTY"}, "no LMDB (a folder with data.mdb) under"),
    ((), {"DATASETS_DIR": "/nonexistent/data"}, "dataset directory not found"),
    (("--bs", "0"), {}, "argument --batchsize: a positive integer is expected, got '0'"),
    (("--bs", "abc"), {}, "argument --batchsize: a positive integer is expected, got 'abc'"),
    (("--batch", "8"), {}, "unknown argument '--batch'"),
    (("--preset", "nope"), {}, "unknown model preset 'nope'"),
    ((), {"MODEL_PATH": "/nonexistent/model.onnx"}, "/nonexistent/model.onnx not found"),
    (("--rpc", "localhost:9190"), {}, "--rpc must look like HOST:PORT:KEY"),
    ((), {"RPC": "localhost:x:key"}, "--rpc must look like HOST:PORT:KEY"),
    (("--rpc",), {}, "--rpc needs a value"),
])
def test_bad_setup_is_one_error_line(env, args, overrides, message):
    base, tmp = env
    overrides = {k: (str(tmp / "empty") if v == "EMPTY" else v) for k, v in overrides.items()}
    for script in ("infer_svtr_fp16_accuracy.sh", "infer_svtr_fp16_performance.sh"):
        ran = run(script, base, *args, **overrides)
        assert message in ran.one_error(), (script, ran.err)
