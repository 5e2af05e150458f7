"""build_engine.py and tools/parity_check.py as command lines (in-process through main), and
what they do with engines that cannot be trusted or run here."""
import os
import shutil

import numpy as np
import pytest

from cli_runs import run_main, run_process
from tiny_models import make_fake_onnx


def build(*argv):
    return run_main("build_engine", *argv)


@pytest.mark.parametrize("args, message", [
    (["--model_path", "missing.onnx", "--input", "x:2,3,8,16"], "ONNX model not found"),
    (["--input", "x:2,3"], "--input must look like"),
    (["--input", "x:2,3,8,16", "--target", "npu"], "unknown target 'npu'"),
    (["--input", "x:2,3,8,16", "--precision", "int4"], "unknown precision 'int4'"),
    (["--input", "x:2,5,8,16"], "cannot take"),
])
def test_cli_bad_input_is_one_error_line(tiny, tmp_path, args, message):
    base = {"--model_path": tiny, "--input": "x:2,3,8,16", "--precision": "fp32", "--engine_path": str(tmp_path / "e.so"),
            "--target": "llvm"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    ran = build(*[item for pair in base.items() for item in pair])
    assert message in ran.one_error()
    assert not (tmp_path / "e.so").exists()


def test_cli_builds_and_prints_parity(tiny, tmp_path):
    ran = build("--model_path", tiny, "--input", "x:2,3,8,16", "--precision", "fp32",
                "--engine_path", str(tmp_path / "e.so"), "--target", "llvm")
    assert ran.code == 0, ran.err
    line = [ln for ln in ran.out.splitlines() if ln.startswith("parity")]
    assert len(line) == 1 and "argmax agreement 100.00%" in line[0]


def test_parity_tool_on_its_own(built, tiny, tmp_path, x):
    np.savez(tmp_path / "rows.npz", x=np.concatenate([x, x[:1]]))  # 3 rows through a batch-2 engine
    ok = run_main("parity_check", "--engine", built[0], "--model_path", tiny, "--inputs", tmp_path / "rows.npz",
                  "--min_agreement", "1.0")
    assert ok.code == 0, ok.err
    assert "(3 rows x 4 steps)" in ok.out and "argmax agreement 100.00%" in ok.out
    bad = run_main("parity_check", "--engine", built[0], "--model_path", tiny, "--inputs", tmp_path / "missing.npz")
    assert bad.one_error().startswith("error: cannot read an 'x' array")


def test_engine_path_that_is_a_folder_is_refused_before_compiling(tmp_path):
    model = make_fake_onnx(tmp_path / "hotel.onnx")
    ran = build("--model_path", model, "--input", "x:4,3,64,256", "--precision", "fp32", "--target", "llvm",
                "--engine_path", tmp_path)
    assert "--engine_path" in ran.one_error() and "is a folder" in ran.error
    assert "building" not in ran.out


def test_parity_with_another_network_is_one_error(built, tmp_path):
    ran = run_main("parity_check", "--engine", built[0], "--model_path", make_fake_onnx(tmp_path / "hotel.onnx"))
    assert "not the model the engine was built from" in ran.one_error()


def test_damaged_engine_image_is_one_error(built, tmp_path):
    from svtr_toolkit.compile import build as builder, targets
    from svtr_toolkit.engine_file import read_engine_metadata
    from tiny_models import SHAPE

    engine = tmp_path / "damaged.so"
    shutil.copy(built[0], engine)
    assert len(read_engine_metadata(str(engine))["image_sha256"]) == 64
    raw = bytearray(engine.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside the ELF image; the footer is intact
    engine.write_bytes(bytes(raw))
    ran = run_main("parity_check", "--engine", engine, "--model_path", built[1]["model_path"])
    assert "is damaged: its image does not match the digest" in ran.one_error()
    lines = []
    builder.build_engine(built[1]["model_path"], "x", SHAPE, "fp32", targets.select_target("llvm"), str(engine),
                         log=lines.append)
    assert any("image damaged" in ln for ln in lines), lines  # a rebuild, not a reuse


def test_cross_compiled_engine_skips_parity_with_a_reason(tmp_path):
    # its own process: CUDA code generation may be missing or fail in this TVM, and that skips
    ran = run_process(["build_engine.py", "--model_path", make_fake_onnx(tmp_path / "hotel.onnx"), "--input",
                       "x:4,3,64,256", "--precision", "fp32", "--target", "cuda", "--engine_path", tmp_path / "cuda.so"],
                      env={"SVTR_CUDA_ARCH": "sm_90"})
    if ran.code != 0 and "parity skipped" not in ran.out:
        pytest.skip(f"this TVM cannot cross-compile for CUDA here: {ran.err.strip().splitlines()[-1:]}")
    assert ran.code == 0, ran.err
    assert "parity skipped: the engine was cross-compiled for NVIDIA GPU (cuda, sm_90)" in ran.out
    assert os.path.exists(tmp_path / "cuda.so")
