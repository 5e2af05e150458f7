"""scripts/infer_svtr_fp16_*.sh: model-zoo arguments, data checks, thresholds -> exit status.

A fake SVTR-shaped model that always reads 'hotel' stands in for SVTR_opt.onnx (MODEL_PATH),
so the scripts build a real TVM engine in seconds and the accuracy is known exactly.
"""
import os
import subprocess
from pathlib import Path

import pytest

from tiny_models import make_fake_onnx, write_lmdb

REPO = Path(__file__).resolve().parents[1]
# 'hotel' after PaddleOCR's label rules for 2 of 5 samples: accuracy 0.4
LABELS = ["hotel", "HOTEL", "grand", "pacific", "hostel"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scripts")
    write_lmdb(tmp / "data" / "evaluation" / "toy", LABELS)
    (tmp / "empty").mkdir()
    base = dict(os.environ, MODEL_PATH=str(make_fake_onnx(tmp / "fake.onnx")), DATASETS_DIR=str(tmp / "data"),
                ENGINE_DIR=str(tmp / "engines"), TARGET="llvm", LOOP_COUNT="2")
    base.pop("ACC_TARGET", None)
    base.pop("FPS_TARGET", None)
    return base, tmp


def run(script, env, *args, **overrides):
    merged = dict(env)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return subprocess.run(["bash", f"scripts/{script}", *args], cwd=REPO, env=merged, capture_output=True,
                          text=True, timeout=600)


def test_accuracy_threshold_sets_exit_status(env):
    base, tmp = env
    met = run("infer_svtr_fp16_accuracy.sh", base, "--bs", "4", "--acc_target", "0.4")
    assert met.returncode == 0, met.stderr
    assert "expected >= 0.4, got 0.4" in met.stdout and "PASS" in met.stdout
    assert "{'metricResult': {'acc': 0.4" in met.stdout
    assert (tmp / "engines" / "svtr_bs_4_fp16.so").is_file()

    missed = run("infer_svtr_fp16_accuracy.sh", base, "--bs", "4", ACC_TARGET="0.41")
    assert missed.returncode == 1 and "FAIL" in missed.stdout
    assert "engine is up to date" in missed.stdout, "the engine from the first run is reused"


def test_performance_script_reports_fps_and_checks_it(env):
    base, _ = env
    ok = run("infer_svtr_fp16_performance.sh", base, "--bs", "4")
    assert ok.returncode == 0, ok.stderr
    assert "* Mean inference time:" in ok.stdout and "Mean fps:" in ok.stdout
    missed = run("infer_svtr_fp16_performance.sh", base, "--bs", "4", "--fps_target", "1e12")
    assert missed.returncode == 1 and "FAIL" in missed.stdout


@pytest.mark.parametrize("args, overrides, message", [
    ((), {"DATASETS_DIR": None}, "DATASETS_DIR is not set"),
    ((), {"DATASETS_DIR": "EMPTY"}, "is empty"),
    (("--bs", "0"), {}, "--bs must be a positive integer"),
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
        proc = run(script, base, *args, **overrides)
        assert proc.returncode == 2, (script, proc.stdout, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr
