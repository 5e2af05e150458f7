"""Graph passes before import: static input, importer fixes, the fp16 plan and its emulation."""
import numpy as np
import onnx
import pytest

from svtr_toolkit import runtime
from svtr_toolkit.compile import build, onnx_passes, precision, targets
from svtr_toolkit.errors import ToolkitError
from tiny_models import SHAPE, ort_run, tiny_recogniser


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


def test_bf16_rounding_is_round_to_nearest_even():
    values = np.array([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -np.pi, 3.4e38, np.inf, -0.0, 1e-40], np.float32)
    expected = np.array([1.0, 1.0 + 2 ** -6, -3.140625, np.inf, np.inf, -0.0, 9.18355e-41], np.float32)
    np.testing.assert_array_equal(onnx_passes.round_to(values, "bf16"), expected)
    assert np.isnan(onnx_passes.round_to(np.array([np.nan], np.float32), "bf16")).all()


def test_fp16_plan_keeps_rectifier_and_head_fp32(tiny):
    prepared = onnx_passes.prepare_onnx(onnx.load(tiny), "x", SHAPE)
    mod, plan = precision.to_relax(prepared, "x", SHAPE, "fp16")
    assert plan.startswith("rectifier fp32") and "head fp32" in plan
    assert "float16" not in mod["rectifier"].script()
    assert "float16" in mod["recogniser"].script()
    assert "float16" not in mod["head"].script()
    assert 'dtype="float32"' in str(mod["main"].ret_ty)


def test_fp16_emulation_rounds_the_fp16_part_like_the_engine(tiny, tmp_path, x):
    emulated, plan = precision.emulate_plan(onnx.load(tiny), "x", SHAPE)
    assert plan == "rectifier fp32, recogniser fp16, head fp32"
    prepared = onnx_passes.prepare_onnx(onnx.load(tiny), "x", SHAPE)
    rectifier, recogniser = onnx_passes.split_at_grid_sample(prepared)
    head_weight = next(n for n in reversed(prepared.graph.node) if n.op_type == "MatMul").input[1]
    rounded = {i.name for i in emulated.graph.initializer if i.name.endswith("__as_fp16")}
    read_by_rectifier = {i for n in rectifier.graph.node for i in n.input}
    assert rounded and not {r.removesuffix("__as_fp16") for r in rounded} & (read_by_rectifier | {head_weight})
    # every tensor is rounded once: where it is made (or where it enters the region)
    made_by = {o: n for n in emulated.graph.node for o in n.output}
    to_fp16 = [n for n in emulated.graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16]
    again = [n.input[0] for n in to_fp16 if made_by.get(n.input[0]) is not None and made_by[n.input[0]].op_type == "Cast"
             and made_by.get(made_by[n.input[0]].input[0]) in to_fp16]
    assert to_fp16 and not again, again
    for init in emulated.graph.initializer:
        if init.name in rounded:
            value = onnx.numpy_helper.to_array(init)
            np.testing.assert_array_equal(value, value.astype(np.float16).astype(np.float32))

    fp32, emulated_out = ort_run(prepared, x), ort_run(emulated, x)
    path = str(tmp_path / "tiny_fp16.so")
    build.build_engine(tiny, "x", SHAPE, "fp16", targets.select_target("llvm"), path, log=lambda *_: None)
    engine_out = np.asarray(runtime.load_engine(path).run(x))
    emulated_error, engine_error = np.abs(emulated_out - fp32).max(), np.abs(engine_out - fp32).max()
    # the same kind of error: of the engine's order (it rounds more tensors than TVM does),
    # and far above fp32 reordering noise (~1e-7 here)
    assert 1e-5 < emulated_error and 0.1 < emulated_error / engine_error < 10


def test_fp16_storage_mode_computes_the_rounded_values_in_fp32(tiny):
    prepared = onnx_passes.prepare_onnx(onnx.load(tiny), "x", SHAPE)
    mod, plan = precision.to_relax(prepared, "x", SHAPE, "fp16", mode="storage")
    assert plan.startswith("rectifier fp32") and "recogniser fp16 (the operands of its products by weights" in plan
    assert "head fp32" in plan
    script = mod.script()
    # fp16 appears only as the rounding casts' target, never as an operand of arithmetic
    fp16_ops = {line.split("= R.")[1].split("(")[0] for line in script.splitlines()
                if "= R." in line and '"float16"' in line}
    assert fp16_ops == {"astype"}, fp16_ops
    assert precision.reduced_mode("fp16", {"kind": "llvm"}, None) == "storage"
    assert precision.reduced_mode("fp16", {"kind": "llvm"}, {"chunk": 64}) == "storage"  # products in fp16
    assert precision.reduced_mode("fp16", {"kind": "cuda"}, None) == "mixed"
    assert precision.reduced_mode("bf16", {"kind": "llvm"}, None) == "storage"


@pytest.mark.parametrize("reduced", ["fp16", "bf16"])
def test_storage_engine_is_onnxruntime_on_the_same_rounding(tiny, tmp_path, x, reduced):
    """Differential: the engine that keeps fp16 (bf16) values in fp32 arithmetic against
    onnxruntime running the same rounding (``emulate_plan``): equal up to fp32 reordering,
    which only a value at a rounding boundary turns into one step of the reduced precision."""
    emulated, _ = precision.emulate_plan(onnx.load(tiny), "x", SHAPE, reduced)
    reference, fp32 = ort_run(emulated, x), ort_run(onnx_passes.prepare_onnx(onnx.load(tiny), "x", SHAPE), x)
    path = str(tmp_path / f"tiny_{reduced}_storage.so")
    meta = build.build_engine(tiny, "x", SHAPE, reduced, targets.select_target("llvm"), path, log=lambda *_: None,
                              accumulate={"mode": "off", "chunk": None})
    assert f"recogniser {reduced} (" in meta["precision_plan"]
    out = np.asarray(runtime.load_engine(path).run(x))
    rounding = np.abs(reference - fp32)
    assert np.array_equal(out.argmax(-1), reference.argmax(-1))
    assert np.median(np.abs(out - reference)) <= 0.1 * np.median(rounding)
    assert np.abs(out - reference).max() <= rounding.max()


def test_fp16_emulation_can_round_weights_or_activations_alone(tiny, x):
    prepared = onnx_passes.prepare_onnx(onnx.load(tiny), "x", SHAPE)
    full, _ = precision.emulate_plan(onnx.load(tiny), "x", SHAPE, rounding="all")
    weights, _ = precision.emulate_plan(onnx.load(tiny), "x", SHAPE, rounding="weights")
    activations, _ = precision.emulate_plan(onnx.load(tiny), "x", SHAPE, rounding="activations")
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
        onnx_passes.emulate_storage(prepared, set(), "sometimes")
    with pytest.raises(ToolkitError, match="reduced storage must be one of"):
        onnx_passes.emulate_storage(prepared, set(), "all", "fp8")
