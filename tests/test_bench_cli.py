"""tools/bench_cpu.py and tools/bench_kernels.py: every flag and output checked before any work,
in-process through main(argv) (one `error:` line, exit 2, nothing run)."""
import sys

import pytest

from cli_runs import entry_point, run_main
from svtr_toolkit import memory

TINY_MODEL_FLAGS = ["--batches", "2", "--no_progress"]


def refused(name, *argv):
    """The run's one error line; asserts it ran nothing (no machine line, no peak probe)."""
    ran = run_main(name, *argv)
    assert ran.code == 2 and ran.out == "", (ran.code, ran.out, ran.err)
    return ran.error


def parsed(*argv):
    """bench_cpu.py's parsed arguments (the command line's defaults filled in)."""
    return entry_point("bench_cpu").__globals__["parse_args"](list(argv))


@pytest.mark.parametrize("argv, message", [
    (["--min_sample_s", "nan"], "argument --min_sample_s: a finite number above 0 is expected, got 'nan'"),
    (["--min_sample_s", "inf"], "argument --min_sample_s: a finite number above 0 is expected"),
    (["--min_sample_s", "0"], "argument --min_sample_s: a finite number above 0 is expected"),
    (["--settle_s", "nan"], "argument --settle_s: a finite number of 0 or more is expected, got 'nan'"),
    (["--settle_s", "inf"], "argument --settle_s: a finite number of 0 or more is expected"),
    (["--settle_s", "-1"], "argument --settle_s: a finite number of 0 or more is expected"),
    (["--threads", "0"], "argument --threads: a positive integer is expected, got '0'"),
    (["--threads", "-2"], "argument --threads: a positive integer is expected"),
    (["--threads", "1.5"], "argument --threads: a positive integer is expected"),
    (["--rounds", "0"], "argument --rounds: a positive integer is expected"),
    (["--model_path", ""], "argument --model_path: an empty path is given"),
    (["--out_dir", ""], "argument --out_dir: an empty path is given"),
    (["--build", "--engine_dir", ""], "argument --engine_dir: an empty path is given"),
    (["--engine", "fp32="], "--engine must look like NAME=PATH"),
    (["--contenders", "onnxruntime,nope"], "argument --contenders: unknown contender 'nope'"),
    (["--contenders", "tvm,tvm"], "argument --contenders: contender 'tvm' is given twice"),
    (["--contenders", ""], "argument --contenders: unknown contender ''"),
    (["--contenders", "onnxruntime,openvino", "--engine", "a=b.so"], "--engine is for TVM engines"),
    (["--contenders", "onnxruntime", "--build"], "--build is for TVM engines"),
    (["--contenders", "onnxruntime", "--fp16_chunks", "64"], "--fp16_chunks is for TVM engines"),
    (["--precision", "fp32"], "--precision is for the engines --build builds; add --build"),
    (["--engine_dir", "eng"], "--engine_dir is for the engines --build builds; add --build"),
    (["--build", "--precision", "fp8"], "unknown precision 'fp8'"),
])
def test_bench_cpu_refuses_bad_flags_before_any_work(tiny, argv, message):
    assert message in refused("bench_cpu", "--model_path", tiny, *TINY_MODEL_FLAGS, *argv)


def test_bench_cpu_takes_no_wait_and_lists(tiny):
    args = parsed("--settle_s", "0", "--contenders", "tvm,onnxruntime", "--threads", "1")
    assert args.settle_s == 0.0 and args.contenders == ["tvm", "onnxruntime"] and args.threads == 1
    assert parsed().contenders == ["onnxruntime", "openvino", "tvm"]


def test_no_openvino_still_works_and_says_it_is_deprecated(capsys):
    args = parsed("--no_openvino")
    assert args.contenders == ["onnxruntime", "tvm"]
    assert "note: --no_openvino is deprecated; use --contenders onnxruntime,tvm" in capsys.readouterr().err


def test_a_contender_named_that_cannot_run_here_is_refused(monkeypatch, tiny):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    assert "--contenders openvino: openvino is not installed" in refused(
        "bench_cpu", "--model_path", tiny, *TINY_MODEL_FLAGS, "--contenders", "onnxruntime,openvino")


def test_bench_cpu_checks_its_inputs_and_outputs_before_any_work(tiny, tmp_path):
    (tmp_path / "a_file").write_text("")
    assert "is a file, not a folder" in refused("bench_cpu", "--model_path", tiny, *TINY_MODEL_FLAGS,
                                                "--out_dir", tmp_path / "a_file" / "out")
    assert "not found" in refused("bench_cpu", "--model_path", tmp_path / "missing.onnx", *TINY_MODEL_FLAGS)
    assert "--engine e" in refused("bench_cpu", "--model_path", tiny, *TINY_MODEL_FLAGS, "--engine",
                                   f"e={tmp_path / 'missing.so'}")
    # the report is the model itself
    model = tmp_path / "bench_cpu.json"
    model.write_bytes(open(tiny, "rb").read())
    line = refused("bench_cpu", "--model_path", model, *TINY_MODEL_FLAGS, "--out_dir", tmp_path)
    assert "is the input --model_path" in line and "outputs are never its inputs" in line
    # an engine --build would write is an engine given to time
    given = tmp_path / "eng" / "tiny_bs_2_fp32_nodb.so"
    given.parent.mkdir()
    given.write_bytes(b"not an engine")
    line = refused("bench_cpu", "--model_path", tiny, *TINY_MODEL_FLAGS, "--build", "--precision", "fp32",
                   "--engine_dir", given.parent, "--engine", f"mine={given}", "--out_dir", tmp_path / "out")
    assert "--engine_dir" in line and "is the input --engine mine" in line


def test_one_name_may_cover_engines_of_several_batches_but_not_two_at_one(tiny, built, tmp_path):
    from svtr_toolkit.bench import engine_batches

    copy = tmp_path / "copy.so"
    copy.write_bytes(open(built[0], "rb").read())
    assert engine_batches([("tvm", built[0])]) == [built[1]["input_shape"][0]]
    line = refused("bench_cpu", "--model_path", tiny, *TINY_MODEL_FLAGS, "--engine", f"tvm={built[0]}",
                   "--engine", f"tvm={copy}")
    assert f"--engine name 'tvm' is given twice for batch {built[1]['input_shape'][0]}" in line


def test_bench_cpu_refuses_a_sweep_whose_inputs_do_not_fit_in_memory(monkeypatch, tiny):
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 20)
    line = refused("bench_cpu", "--model_path", tiny, "--batches", "1,8,4096", "--no_progress")
    assert "--batches 1,8,4096" in line and "this machine has 0.0 GiB available" in line
    assert "use smaller batches" in line


@pytest.mark.parametrize("argv, message", [
    (["--out_dir", ""], "argument --out_dir: an empty path is given"),
    (["--min_sample_s", "nan"], "argument --min_sample_s: a finite number above 0"),
    (["--rounds", "-1"], "argument --rounds: a positive integer"),
])
def test_bench_kernels_refuses_bad_flags_before_any_work(argv, message):
    assert message in refused("bench_kernels", *argv)


def test_bench_kernels_checks_its_output_and_memory_before_any_work(monkeypatch, tmp_path):
    (tmp_path / "a_file").write_text("")
    assert "is a file, not a folder" in refused("bench_kernels", "--out_dir", tmp_path / "a_file" / "out")
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 30)
    line = refused("bench_kernels", "--m", "200000", "--k", "32,4096", "--out_dir", tmp_path)
    assert "M=200000" in line and "K up to 4096" in line and "use smaller --m, --n or --k" in line
