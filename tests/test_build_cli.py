"""build_engine.py and tools/parity_check.py as command lines."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_build(*args):
    return subprocess.run([sys.executable, "build_engine.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--model_path", "missing.onnx", "--input", "x:2,3,8,16"], "ONNX model not found"),
    (["--input", "x:2,3"], "--input must look like"),
    (["--input", "x:2,3,8,16", "--target", "npu"], "unknown target 'npu'"),
    (["--input", "x:2,3,8,16", "--precision", "int4"], "unknown precision 'int4'"),
    (["--input", "x:2,5,8,16"], "cannot take"),
])
def test_cli_bad_input_is_one_error_line(tiny, tmp_path, args, message):
    base = {"--model_path": tiny, "--input": "x:2,3,8,16", "--precision": "fp32", "--engine_path": str(tmp_path / "e.so"), "--target": "llvm"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    proc = run_build(*[item for pair in base.items() for item in pair])
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert not (tmp_path / "e.so").exists()


def test_cli_builds_and_prints_parity(tiny, tmp_path):
    proc = run_build("--model_path", tiny, "--input", "x:2,3,8,16", "--precision", "fp32",
                     "--engine_path", str(tmp_path / "e.so"), "--target", "llvm")
    assert proc.returncode == 0, proc.stderr
    line = [l for l in proc.stdout.splitlines() if l.startswith("parity")]
    assert len(line) == 1 and "argmax agreement 100.00%" in line[0]


def test_parity_tool_on_its_own(built, tiny, tmp_path, x):
    np.savez(tmp_path / "rows.npz", x=np.concatenate([x, x[:1]]))  # 3 rows through a batch-2 engine
    cmd = [sys.executable, "tools/parity_check.py", "--engine", built[0], "--model_path", tiny]
    ok = subprocess.run(cmd + ["--inputs", str(tmp_path / "rows.npz"), "--min_agreement", "1.0"],
                        cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "(3 rows x 4 steps)" in ok.stdout and "argmax agreement 100.00%" in ok.stdout
    bad = subprocess.run(cmd + ["--inputs", str(tmp_path / "missing.npz")], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: cannot read an 'x' array")
