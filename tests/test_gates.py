"""Gates: a threshold applies in the mode that checks it and is refused (one `error:` line, exit 2)
everywhere else, out of range, or with a bad output path, before anything runs; in the scripts,
before an engine is built."""
import pytest

from cli_runs import run_main, run_process
from tiny_models import make_fake_onnx, write_lmdb


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gates")
    write_lmdb(tmp / "data" / "toy", ["hotel"] * 8 + ["grand"])
    return {"tmp": tmp, "data": tmp / "data", "hotel": make_fake_onnx(tmp / "hotel.onnx")}


def infer(data, *args):
    return run_main("inference", "--engine", data["hotel"], "--batchsize", 4, "--datasets", data["data"], *args)


@pytest.mark.parametrize("args, message", [
    (("--fps_target", "100000"), "--fps_target is not checked by an accuracy run"),
    (("--acc_target", "0.99", "--perf_only"), "--acc_target is not checked by a --perf_only run"),
    (("--fps_target", "-1", "--perf_only"), "argument --fps_target: a finite number above 0 is expected"),
    (("--fps_target", "nan", "--perf_only"), "argument --fps_target: a finite number above 0 is expected"),
    (("--acc_target", "88"), "argument --acc_target: a fraction in [0, 1] is expected"),
])
def test_inference_gate_in_wrong_mode_or_out_of_range_is_refused(data, args, message):
    ran = infer(data, *args)
    assert message in ran.one_error()
    assert "metricResult" not in ran.out  # refused before anything ran


def test_bad_report_path_is_refused_before_the_evaluation(data, tmp_path):
    ran = infer(data, "--report", tmp_path)  # a folder
    assert "--report" in ran.one_error() and "is a folder" in ran.error
    assert "metricResult" not in ran.out
    (tmp_path / "file").write_text("")
    assert "is a file, not a folder" in infer(data, "--report", tmp_path / "file" / "r.json").one_error()


def test_parity_min_agreement_is_a_fraction(data):
    ran = run_main("parity_check", "--engine", "/nonexistent.so", "--model_path", data["hotel"],
                   "--min_agreement", "100")
    assert "argument --min_agreement: a fraction in [0, 1] is expected" in ran.one_error()


def script(name, data, *args, **env):
    """A model-zoo script end to end, as its own process, on the fake 'hotel' model."""
    env = {"MODEL_PATH": data["hotel"], "DATASETS_DIR": data["data"], "ENGINE_DIR": data["tmp"] / "script_engines",
           "TARGET": "llvm", "LOOP_COUNT": "2", "ACC_TARGET": None, "FPS_TARGET": None, "REPORT": None, **env}
    return run_process([f"scripts/{name}", "--bs", "4", *args], env=env)


@pytest.mark.parametrize("name, args, env, message", [
    ("infer_svtr_fp16_accuracy.sh", (), {"FPS_TARGET": "1000000"}, "--fps_target is not checked by an accuracy run"),
    ("infer_svtr_fp16_accuracy.sh", ("--fps_target", "5"), {}, "--fps_target is not checked by an accuracy run"),
    ("infer_svtr_fp16_performance.sh", (), {"ACC_TARGET": "0.9"}, "--acc_target is not checked by a --perf_only run"),
    ("infer_svtr_fp16_accuracy.sh", ("--acc_target", "88"), {}, "a fraction in [0, 1] is expected"),
    ("infer_svtr_fp16_performance.sh", ("--fps_target", "-1"), {}, "a finite number above 0 is expected"),
    ("infer_svtr_fp16_accuracy.sh", (), {"REPORT": "FILE/r.json"}, "--report"),
    ("infer_svtr_fp16_accuracy.sh", (), {"DATASETS_DIR": "FILE"}, "is a file, not a folder of LMDBs"),
])
def test_script_gates_are_checked_before_the_build(data, name, args, env, message):
    (data["tmp"] / "a_file").write_text("")
    env = {k: v.replace("FILE", str(data["tmp"] / "a_file")) for k, v in env.items()}
    ran = script(name, data, *args, **env)
    assert message in ran.one_error()
    assert not (data["tmp"] / "script_engines").exists(), "refused before any engine was built"
