"""OpenVINO as a runtime of inference.py, parity_check.py and the scripts: the runtime and the
precision in the command line's vocabulary, what it computed in named in the output and the
report, the same evaluation and gates, and compare_reports pairing it with onnxruntime."""
import json
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cli_runs import run_main, run_process
from svtr_toolkit import runtime
from svtr_toolkit.errors import ToolkitError
from tiny_models import make_fake_onnx, write_lmdb

openvino = pytest.importorskip("openvino", reason="openvino is not installed (in requirements.txt)")
OV_VERSION = openvino.__version__.split("-")[0]
LABELS = ["hotel", "HOTEL", "grand", "pacific", "hostel"]  # the 'hotel' model reads 2 of 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openvino")
    write_lmdb(tmp / "data" / "toy", LABELS)
    return {"model": str(make_fake_onnx(tmp / "fake.onnx")), "data": str(tmp / "data"), "tmp": tmp}


def infer(setup, *argv):
    return run_main("inference", "--engine", setup["model"], "--batchsize", 2, "--datasets", setup["data"],
                    "--no_progress", *argv)


def default_precision(model_path, batch=2) -> str:
    """What OpenVINO computes in by default on this CPU, asked of OpenVINO directly."""
    core = openvino.Core()
    model = core.read_model(model_path)
    model.reshape({model.inputs[0].get_any_name(): [batch, 3, 64, 256]})
    hint = core.compile_model(model, "CPU").get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[hint]


# ----------------------------------------------------------------------------- the backend
def test_openvino_backend_compiles_the_batch_asked_and_says_what_it_computes_in(setup):
    backend = runtime.open_backend(setup["model"], batch_size=2, input_name="x", runtime="openvino",
                                   precision="fp32")
    assert isinstance(backend, runtime.OpenVinoBackend) and backend.input_shape == (2, 3, 64, 256)
    assert backend.runtime_description() == {"runtime": "openvino", "version": OV_VERSION, "precision": "fp32",
                                             "computes_in": "fp32"}
    assert backend.config["INFERENCE_PRECISION_HINT"] == "f32" and backend.config["PERFORMANCE_HINT"] == "LATENCY"
    reference = runtime.open_backend(setup["model"], batch_size=2)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 256)).astype(np.float32)
    assert np.abs(backend.run(x) - reference.run(x)).max() < 1e-5
    default = runtime.open_backend(setup["model"], batch_size=2, runtime="openvino")
    assert default.precision is None and default.computes_in == default_precision(setup["model"])
    assert "its default precision" in default.runtime_line()


def test_free_image_dimensions_come_from_the_image_shape_and_fixed_ones_must_match(tmp_path, setup):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    free = str(tmp_path / "free.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), free)
    backend = runtime.open_backend(free, batch_size=2, runtime="openvino", image_shape=(3, 48, 320))
    assert backend.input_shape == (2, 3, 48, 320)
    assert backend.run(np.ones((2, 3, 48, 320), np.float32)).shape == (2, 3, 1, 1)
    with pytest.raises(ToolkitError, match="free image dimensions"):
        runtime.open_backend(free, batch_size=2, runtime="openvino")
    with pytest.raises(ToolkitError, match=r"takes input \[None, 3, 64, 256\], not \[2, 3, 48, 320\]"):
        runtime.open_backend(setup["model"], batch_size=2, runtime="openvino", image_shape=(3, 48, 320))


@pytest.mark.parametrize("path, run_on, precision, remote, says", [
    ("e.so", "openvino", None, False, "--runtime openvino runs .onnx models; e.so is an engine"),
    ("e.so", None, "fp32", False, "computes in the precision it was built at"),
    ("m.onnx", None, "fp16", False, "onnxruntime computes in fp32, not fp16"),
    ("m.onnx", "onnxruntime", "bf16", False, "onnxruntime computes in fp32, not bf16"),
    ("m.onnx", "openvino", None, True, "--rpc runs TVM engines"),
    ("m.onnx", "openvino", "bf16", False, None),
    ("e.so", None, None, True, None),
])
def test_what_a_runtime_can_run_is_said_from_the_names_alone(path, run_on, precision, remote, says):
    problem = runtime.runtime_problem(path, run_on, precision, remote)
    assert problem is None if says is None else says in problem


# ----------------------------------------------------------------------------- inference.py
def test_an_openvino_run_names_its_runtime_and_pairs_with_onnxruntime(setup):
    ort_report, ov_report = setup["tmp"] / "ort.json", setup["tmp"] / "ov.json"
    ort = infer(setup, "--report", ort_report, "--acc_target", 0.4)
    ov = infer(setup, "--runtime", "openvino", "--precision", "fp32", "--report", ov_report, "--acc_target", 0.4)
    assert ort.code == 0 and ov.code == 0, (ort.err, ov.err)
    assert f"runtime: openvino {OV_VERSION}, precision fp32, computes in fp32" in ov.out
    assert "acc check: expected >= 0.4, got 0.4: PASS" in ov.out
    engine = json.loads(ov_report.read_text())["engine"]
    assert (engine["runtime"], engine["version"], engine["precision"], engine["computes_in"]) == (
        "openvino", OV_VERSION, "fp32", "fp32")
    assert json.loads(ort_report.read_text())["engine"]["runtime"] == "onnxruntime"

    paired = run_main("compare_reports", ort_report, ov_report, "--max_net_loss", 0)
    assert paired.code == 0, paired.err
    assert "(onnxruntime " in paired.out and f"(openvino {OV_VERSION}, precision fp32, computes in fp32)" in paired.out
    pooled = next(line for line in paired.out.splitlines() if line.startswith("pooled"))
    assert pooled.split()[1:7] == ["5", "40.00", "40.00", "0", "0", "+0"]


def test_the_default_precision_is_the_one_openvino_compiled(setup):
    report = setup["tmp"] / "ov_default.json"
    ran = infer(setup, "--runtime", "openvino", "--perf_only", "--loop_count", 2, "--report", report)
    assert ran.code == 0, ran.err
    computes_in = default_precision(setup["model"])
    assert f"runtime: openvino {OV_VERSION}, its default precision, computes in {computes_in}" in ran.out
    engine = json.loads(report.read_text())["engine"]
    assert engine["precision"] == "default" and engine["computes_in"] == computes_in


@pytest.mark.parametrize("argv, says", [
    (["--runtime", "tensorrt"], "argument --runtime: unknown runtime 'tensorrt' (choose from onnxruntime, openvino)"),
    (["--precision", "fp8"], "argument --precision: unknown precision 'fp8'"),
    (["--precision", "bf16"], "onnxruntime computes in fp32, not bf16"),
    (["--runtime", "openvino", "--rpc", "127.0.0.1:9190:key"], "--rpc runs TVM engines"),
])
def test_bad_runtime_flags_are_refused_before_any_work(setup, argv, says):
    ran = infer(setup, *argv)
    assert ran.code == 2 and says in ran.error and ran.out == ""


def test_an_engine_is_not_given_a_runtime_or_a_precision(setup, built):
    for argv, says in ((["--runtime", "openvino"], "runs .onnx models"), (["--precision", "fp16"], "built at")):
        ran = run_main("inference", "--engine", built[0], "--batchsize", 2, "--datasets", setup["data"], *argv)
        assert ran.code == 2 and says in ran.error and ran.out == ""


def test_openvino_missing_is_said_before_any_work(monkeypatch, setup):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    ran = infer(setup, "--runtime", "openvino", "--check_args")
    assert ran.code == 2 and "openvino is not installed" in ran.error and "pip install openvino==" in ran.error


# ----------------------------------------------------------------------------- golden SVTR weights
def test_golden_rows_on_openvino_in_fp32_and_its_default(golden_export, shared_dir):
    """PaddleOCR's own output for the golden rows against OpenVINO on the export of those weights:
    fp32 keeps every argmax; the default precision is what OpenVINO says it compiled."""
    from svtr_toolkit.evaluate.parity import run_padded
    from svtr_toolkit.numerics import compare

    golden = np.load(shared_dir / "golden" / "svtr_tiny_seeded_io.npz")
    x, probs = golden["x"], golden["probs"]
    onnx_path = str(golden_export.out_dir / "SVTR.onnx")
    fp32 = runtime.open_backend(onnx_path, batch_size=len(x), runtime="openvino", precision="fp32")
    parity = compare(run_padded(fp32, x), probs)
    assert parity.argmax_agreement == 1.0 and parity.max_abs_diff < 5e-3, parity
    default = runtime.open_backend(onnx_path, batch_size=len(x), runtime="openvino")
    assert default.computes_in == default_precision(onnx_path, len(x))
    if default.computes_in == "fp32":
        assert compare(run_padded(default, x), probs).argmax_agreement == 1.0

    tool = run_main("parity_check", "--engine", onnx_path, "--model_path", onnx_path, "--runtime", "openvino",
                    "--precision", "fp32", "--inputs", shared_dir / "golden" / "svtr_tiny_seeded_io.npz")
    assert tool.code == 0, tool.err
    assert "parity openvino vs onnxruntime fp32 (14 rows" in tool.out
    assert "parity openvino vs the 'probs' stored in svtr_tiny_seeded_io.npz (14 rows x 25 steps)" in tool.out
    assert "argmax agreement 100.00%" in tool.out.splitlines()[-1]



# ----------------------------------------------------------------------------- the scripts
def test_the_accuracy_script_runs_the_onnx_model_on_openvino_without_a_build(setup):
    env = {"DATASETS_DIR": setup["data"], "MODEL_PATH": setup["model"], "RUNTIME": "openvino", "PRECISION": "fp32",
           "ENGINE_DIR": setup["tmp"] / "engines", "PYTHON": sys.executable, "ACC_TARGET": None}
    ran = run_process(["scripts/infer_svtr_fp16_accuracy.sh", "--bs", "2", "--acc_target", "0.4"], env=env)
    assert ran.code == 0, ran.err
    assert "the ONNX model on openvino, precision fp32" in ran.out
    assert "runtime: openvino" in ran.out and "acc check: expected >= 0.4, got 0.4: PASS" in ran.out
    assert not (setup["tmp"] / "engines").exists(), "no engine is built for an ONNX runtime"
