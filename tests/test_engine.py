"""build_engine: input parsing, target choice, graph passes, metadata, staleness, atomic writes."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from svtr_toolkit import engine, onnx_passes, parity, targets
from svtr_toolkit.errors import ToolkitError
from tiny_models import tiny_recogniser

REPO = Path(__file__).resolve().parents[1]
SHAPE = (2, 3, 8, 16)


def ort_run(model_or_path, x):
    source = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_recogniser(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="module")
def x():
    return parity.default_inputs(SHAPE)


# ------------------------------------------------------------------ input spec and targets
@pytest.mark.parametrize("text, expected", [("x:32,3,64,256", ("x", (32, 3, 64, 256))), ("in.0:1,3,48,320", ("in.0", (1, 3, 48, 320)))])
def test_parse_input_spec(text, expected):
    assert engine.parse_input_spec(text) == expected


@pytest.mark.parametrize("text", ["x", "x:", ":32,3,64,256", "x:32,3,64", "x:32,3,64,256,1", "x:32,3,a,256", "x:0,3,64,256", "x:-1,3,64,256"])
def test_parse_input_spec_rejects(text):
    with pytest.raises(ToolkitError, match="name:N,C,H,W"):
        engine.parse_input_spec(text)


def test_auto_target_prefers_igie_then_cuda_then_cpu(monkeypatch):
    monkeypatch.setattr(targets, "igie_available", lambda: True)
    monkeypatch.setattr(targets, "cuda_available", lambda: True)
    assert targets.select_target("auto").name == "iluvatar"
    monkeypatch.setattr(targets, "igie_available", lambda: False)
    monkeypatch.setattr(targets, "cuda_target", lambda arch=None: targets.BuildTarget("cuda", {"kind": "cuda"}, "gpu"))
    assert targets.select_target("auto").name == "cuda"
    monkeypatch.setattr(targets, "cuda_available", lambda: False)
    assert targets.select_target("auto").name == "llvm"


def test_host_target_uses_real_cpu_and_cores():
    import tvm

    target = targets.select_target("llvm")
    assert target.spec["mcpu"] == tvm.target.codegen.llvm_get_system_cpu()
    assert target.spec["num-cores"] == len(os.sched_getaffinity(0))
    assert target.tvm_target().kind.name == "llvm"


THREADS_PROBE = """
import os, tvm
from svtr_toolkit import targets
tvm.cpu(0)
print(targets.use_all_cpu_cores(), tvm.get_global_func("runtime.NumThreads")())
"""


@pytest.mark.parametrize("user_threads", [None, "1"])
def test_cpu_engines_get_every_core_unless_the_user_says(user_threads):
    # TVM alone would take half the logical CPUs on x86 (one thread on a 2-vCPU VM)
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    if user_threads:
        env["TVM_NUM_THREADS"] = user_threads
    out = subprocess.run([sys.executable, "-c", THREADS_PROBE], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout.split()
    expected = int(user_threads) if user_threads else len(os.sched_getaffinity(0))
    assert out == [str(expected), str(expected)]


def test_unknown_and_unavailable_targets(monkeypatch):
    with pytest.raises(ToolkitError, match="unknown target 'tpu'"):
        targets.select_target("tpu")
    monkeypatch.setattr(targets, "igie_available", lambda: False)
    with pytest.raises(ToolkitError, match="IGIE"):
        targets.select_target("iluvatar")


def test_cuda_cross_compile_target_needs_no_device(monkeypatch):
    monkeypatch.setenv("SVTR_CUDA_ARCH", "sm_90")
    target = targets.select_target("cuda")
    assert target.spec["arch"] == "sm_90" and target.tvm_target().kind.name == "cuda"


# ------------------------------------------------------------------ ONNX passes
def test_passes_keep_numerics_and_remove_what_relax_cannot_take(tiny, x):
    model = onnx.load(tiny)
    fixed = onnx_passes.decompose_clamps(onnx_passes.drop_empty_resize_inputs(onnx_passes.static_input(model, "x", SHAPE)))
    ops = {node.op_type for node in fixed.graph.node}
    assert not ops & {"Clip", "HardSwish", "HardSigmoid"}
    resize = [n for n in fixed.graph.node if n.op_type == "Resize"]
    assert resize and all(n.input[1] == "" and n.input[2] == "" for n in resize)
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == SHAPE[0]
    np.testing.assert_allclose(ort_run(fixed, x), ort_run(tiny, x), atol=1e-6)


@pytest.mark.parametrize("name, shape, message", [
    ("y", SHAPE, "no input 'y'"),
    ("x", (2, 3, 8), "rank 4"),
    ("x", (2, 4, 8, 16), "cannot take"),
])
def test_static_input_rejects_shapes_the_model_cannot_take(tiny, name, shape, message):
    with pytest.raises(ToolkitError, match=message):
        onnx_passes.static_input(onnx.load(tiny), name, shape)


def test_split_at_grid_sample_composes_back(tiny, tmp_path, x):
    model = onnx_passes.static_input(onnx.load(tiny), "x", SHAPE)
    rectifier, recogniser = onnx_passes.split_at_grid_sample(model)
    assert rectifier.graph.node[-1].op_type == "GridSample"
    assert "GridSample" not in {n.op_type for n in recogniser.graph.node}
    np.testing.assert_allclose(ort_run(recogniser, ort_run(rectifier, x)), ort_run(model, x), atol=1e-6)
    plain = tiny_recogniser(tmp_path / "plain.onnx", with_grid_sample=False)
    assert onnx_passes.split_at_grid_sample(onnx.load(plain)) is None


def test_split_ctc_head_composes_back(tiny, x):
    model = onnx_passes.static_input(onnx.load(tiny), "x", SHAPE)
    body, head = onnx_passes.split_ctc_head(model)
    assert [n.op_type for n in head.graph.node] == ["MatMul", "Softmax"]
    assert "MatMul" not in {n.op_type for n in body.graph.node}
    np.testing.assert_allclose(ort_run(head, ort_run(body, x)), ort_run(model, x), atol=1e-6)


def test_split_ctc_head_wants_a_classifier_at_the_end(tiny):
    model = onnx_passes.static_input(onnx.load(tiny), "x", SHAPE)
    head_only = onnx.utils.Extractor(model).extract_model(["x"], ["hsg"])  # ends in HardSigmoid
    assert onnx_passes.split_ctc_head(head_only) is None


def test_fp16_plan_keeps_rectifier_and_head_fp32(tiny):
    prepared = engine.prepare_onnx(onnx.load(tiny), "x", SHAPE)
    mod, plan = engine.to_relax(prepared, "x", SHAPE, "fp16")
    assert plan.startswith("rectifier fp32") and "head fp32" in plan
    assert "float16" not in mod["rectifier"].script()
    assert "float16" in mod["recogniser"].script()
    assert "float16" not in mod["head"].script()
    assert 'dtype="float32"' in str(mod["main"].ret_ty)


def test_fp16_emulation_rounds_the_fp16_part_like_the_engine(tiny, tmp_path, x):
    emulated, plan = engine.emulate_fp16_plan(onnx.load(tiny), "x", SHAPE)
    assert plan == "rectifier fp32, recogniser fp16, head fp32"
    prepared = engine.prepare_onnx(onnx.load(tiny), "x", SHAPE)
    rectifier, recogniser = onnx_passes.split_at_grid_sample(prepared)
    head_weight = next(n for n in reversed(prepared.graph.node) if n.op_type == "MatMul").input[1]
    rounded = {i.name for i in emulated.graph.initializer if i.name.endswith("__as_fp16")}
    read_by_rectifier = {i for n in rectifier.graph.node for i in n.input}
    assert rounded and not {r.removesuffix("__as_fp16") for r in rounded} & (read_by_rectifier | {head_weight})
    for init in emulated.graph.initializer:
        if init.name in rounded:
            value = onnx.numpy_helper.to_array(init)
            np.testing.assert_array_equal(value, value.astype(np.float16).astype(np.float32))

    fp32, emulated_out = ort_run(prepared, x), ort_run(emulated, x)
    path = str(tmp_path / "tiny_fp16.so")
    engine.build_engine(tiny, "x", SHAPE, "fp16", targets.select_target("llvm"), path, log=lambda *_: None)
    engine_out = np.asarray(engine.load_engine(path).run(x))
    emulated_error, engine_error = np.abs(emulated_out - fp32).max(), np.abs(engine_out - fp32).max()
    # the same kind of error: of the engine's order (it rounds more tensors than TVM does),
    # and far above fp32 reordering noise (~1e-7 here)
    assert 1e-5 < emulated_error and 0.1 < emulated_error / engine_error < 10


def test_fp16_emulation_can_round_weights_or_activations_alone(tiny, x):
    prepared = engine.prepare_onnx(onnx.load(tiny), "x", SHAPE)
    full, _ = engine.emulate_fp16_plan(onnx.load(tiny), "x", SHAPE)
    weights, _ = engine.emulate_fp16_plan(onnx.load(tiny), "x", SHAPE, "weights")
    activations, _ = engine.emulate_fp16_plan(onnx.load(tiny), "x", SHAPE, "activations")
    casts = lambda m: sum(n.op_type == "Cast" for n in m.graph.node)  # noqa: E731
    rounded = lambda m: {i.name for i in m.graph.initializer if i.name.endswith("__as_fp16")}  # noqa: E731

    # weights: the same rounded initializers as the full emulation, no activation round trips
    assert rounded(weights) == rounded(full) and casts(weights) == casts(prepared)
    # activations: every initializer untouched, the same round trips as the full emulation
    assert not rounded(activations) and casts(activations) == casts(full) > casts(prepared)
    fp32 = ort_run(prepared, x)
    for model in (weights, activations):
        assert np.abs(ort_run(model, x) - fp32).max() > 1e-6
    # rounding only the weights is exactly the fp32 graph run on fp16-valued weights
    by_hand = onnx.ModelProto()
    by_hand.CopyFrom(prepared)
    values = {i.name.removesuffix("__as_fp16"): onnx.numpy_helper.to_array(i)
              for i in weights.graph.initializer if i.name.endswith("__as_fp16")}
    for init in by_hand.graph.initializer:
        if init.name in values:
            init.CopyFrom(onnx.numpy_helper.from_array(values[init.name], init.name))
    np.testing.assert_array_equal(ort_run(weights, x), ort_run(by_hand, x))
    with pytest.raises(ToolkitError, match="rounding must be one of"):
        onnx_passes.emulate_fp16_storage(prepared, set(), "bf16")


# ------------------------------------------------------------------ build, metadata, staleness
@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("engines") / "tiny_fp32.so")
    meta = engine.build_engine(tiny, "x", SHAPE, "fp32", targets.select_target("llvm"), path, log=lambda *_: None)
    return path, meta


def test_engine_carries_its_build_description(built, tiny):
    import tvm

    path, meta = built
    stored = engine.read_engine_metadata(path)
    assert stored == meta
    assert stored["model_sha256"] == engine.file_sha256(tiny)
    assert stored["input_name"] == "x" and stored["input_shape"] == list(SHAPE)
    assert stored["precision"] == "fp32" and stored["target"]["kind"] == "llvm"
    assert stored["tvm_version"] == tvm.__version__


@pytest.mark.parametrize("precision, atol, min_agreement", [("fp32", 1e-5, 1.0), ("fp16", 5e-3, 1.0)])
def test_engine_matches_onnxruntime(tiny, tmp_path, x, precision, atol, min_agreement):
    path = str(tmp_path / f"tiny_{precision}.so")
    engine.build_engine(tiny, "x", SHAPE, precision, targets.select_target("llvm"), path, log=lambda *_: None)
    result = parity.check(engine.load_engine(path), tiny, x)
    assert result.max_abs_diff <= atol and result.argmax_agreement >= min_agreement, result


def test_fresh_engine_is_reused_and_stale_one_rebuilt(built, tiny, tmp_path):
    path, meta = built
    messages = []
    before = os.stat(path).st_mtime_ns
    engine.build_engine(tiny, "x", SHAPE, "fp32", targets.select_target("llvm"), path, log=messages.append)
    assert os.stat(path).st_mtime_ns == before and "up to date" in messages[0]

    copy = tmp_path / "copy.so"
    copy.write_bytes(Path(path).read_bytes())
    messages.clear()
    engine.build_engine(tiny, "x", (1, 3, 8, 16), "fp32", targets.select_target("llvm"), str(copy), log=messages.append)
    assert "input shape changed" in messages[0]
    assert engine.read_engine_metadata(str(copy))["input_shape"] == [1, 3, 8, 16]


def test_stale_reasons_name_every_change(built):
    _, meta = built
    identity = {k: meta[k] for k in ("recipe_version", "model_sha256", "input_name", "input_shape", "precision", "target", "tvm_version")}
    assert engine.stale_reasons(meta, identity) == []
    changed = dict(identity, model_sha256="0" * 64, precision="fp16", tvm_version="9.9", target={"kind": "cuda"})
    reasons = " | ".join(engine.stale_reasons(meta, changed))
    for word in ("source model", "precision", "tvm version", "target"):
        assert word in reasons
    assert engine.stale_reasons(None, identity)


def test_engine_without_description_is_rejected(tmp_path):
    plain = tmp_path / "plain.so"
    plain.write_bytes(b"\x7fELF not ours")
    assert engine.read_engine_metadata(str(plain)) is None
    with pytest.raises(ToolkitError, match="not an engine built by this toolkit"):
        engine.load_engine(str(plain))


def test_interrupted_build_leaves_no_loadable_file(built, tiny, tmp_path, monkeypatch):
    from tvm.runtime.executable import Executable

    target = tmp_path / "engine.so"
    old = Path(built[0]).read_bytes()
    target.write_bytes(old)

    def half_write(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x7fELF half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Executable, "export_library", half_write)
    with pytest.raises(KeyboardInterrupt):
        engine.build_engine(tiny, "x", SHAPE, "fp16", targets.select_target("llvm"), str(target), log=lambda *_: None)
    assert target.read_bytes() == old, "the previous engine must survive an interrupted rebuild"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine.so"], "no partial files left behind"

    fresh = tmp_path / "new.so"
    with pytest.raises(KeyboardInterrupt):
        engine.build_engine(tiny, "x", SHAPE, "fp32", targets.select_target("llvm"), str(fresh), log=lambda *_: None)
    assert not fresh.exists()


# ------------------------------------------------------------------ command line
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
