"""The Relax rewrites of CPU builds (compile.relax_passes): the network channels-last, pointwise
convolutions as matmuls, elementwise ops in forms the layout conversion moves through. Weight
panels are tests/test_weight_panels.py."""
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from svtr_toolkit import runtime
from svtr_toolkit.compile import build, onnx_passes, precision, relax_passes, targets

SHAPE = (2, 4, 9, 12)
# (kernel, strides, pads [top, left, bottom, right], groups): SVTR's stride-2 and stride-(2,1)
# merges, an asymmetric pad, a 1x1, a grouped conv and a depthwise one with a column stride
CONVS = [((3, 3), (2, 2), (1, 1, 1, 1), 1), ((3, 3), (2, 1), (1, 1, 1, 1), 1),
         ((2, 3), (1, 1), (0, 1, 1, 0), 1), ((1, 1), (1, 1), (0, 0, 0, 0), 1), ((3, 3), (1, 1), (1, 1, 1, 1), 2),
         ((5, 5), (1, 2), (2, 2, 2, 2), 4)]


def saved_model(tmp_path_factory, name, nodes, inits, input_shape, output, output_shape, opset=16) -> str:
    """The graph (input x, one float output) as an ONNX file in a fresh temporary folder."""
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(output_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = str(tmp_path_factory.mktemp(name) / f"{name}.onnx")
    onnx.save(model, path)
    return path


def assert_engine_matches_onnxruntime(model_path, shape, x, tmp_path, precision_name="fp32", atol=1e-5):
    """The model built for this CPU gives onnxruntime's outputs on ``x`` within ``atol``."""
    expected = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    path = str(tmp_path / f"engine_{precision_name}.so")
    meta = build.build_engine(model_path, "x", shape, precision_name, targets.select_target("llvm"), path,
                              log=lambda *_: None, tuning_dir=None)
    assert meta["schedules"]["unscheduled"] == []
    got = runtime.load_engine(path).run(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory):
    """The convolutions of CONVS in a chain, each followed by PP-OCRv4's activation tail (a
    learnable [1]-shaped scale and shift, a clamp): what the layout has to move through."""
    rng = np.random.default_rng(3)
    nodes, inits, current, channels = [], [], "x", SHAPE[1]
    for i, (kernel, strides, pads, groups) in enumerate(CONVS):
        out_channels = channels if groups == channels else (8 if i % 2 == 0 else 4)
        weight = rng.normal(0, 0.4, (out_channels, channels // groups, *kernel)).astype(np.float32)
        inits += [numpy_helper.from_array(weight, f"w{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.1, out_channels).astype(np.float32), f"b{i}"),
                  numpy_helper.from_array(np.array([1.25], np.float32), f"s{i}"),
                  numpy_helper.from_array(np.array([-0.1], np.float32), f"t{i}"),
                  numpy_helper.from_array(np.array(0.0, np.float32), f"lo{i}"),
                  numpy_helper.from_array(np.array(6.0, np.float32), f"hi{i}")]
        nodes += [helper.make_node("Conv", [current, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=list(kernel),
                                   strides=list(strides), pads=list(pads), group=groups),
                  helper.make_node("Mul", [f"c{i}", f"s{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"t{i}"], [f"a{i}"]),
                  helper.make_node("Clip", [f"a{i}", f"lo{i}", f"hi{i}"], [f"r{i}"])]
        current, channels = f"r{i}", out_channels
    return saved_model(tmp_path_factory, "convs", nodes, inits, SHAPE, current, ["n", "c", "h", "w"])


def relax_module(path, shape=SHAPE):
    prepared = onnx_passes.prepare_onnx(onnx_passes.load_onnx(path), "x", shape)
    return precision.to_relax(prepared, "x", shape, "fp32")[0]


def through(mod, *passes):
    import tvm
    from tvm import relax

    steps = [relax.transform.FoldConstant() if p == "fold" else p for p in passes]
    return tvm.transform.Sequential(steps)(mod)


def test_clamps_and_one_element_constants_become_forms_the_layout_moves_through(conv_model):
    mod = relax_module(conv_model)
    before = mod["main"].script()
    assert "R.where" in before
    text = through(mod, relax_passes.canonical_elementwise())["main"].script()
    assert "R.where" not in text and "R.less" not in text and "R.greater" not in text
    assert text.count("R.maximum(") == text.count("R.minimum(") == len(CONVS)


def test_the_network_runs_channels_last_between_one_transpose_in_and_one_out(conv_model):
    mod = through(relax_module(conv_model), relax_passes.canonical_elementwise(), relax_passes.network_to_nhwc(),
                  "fold")
    text = mod["main"].script()
    assert text.count('data_layout="NHWC"') == len(CONVS) and 'data_layout="NCHW"' not in text
    assert len(re.findall(r"R\.permute_dims\(", text)) == 2, text


def test_without_the_canonical_forms_every_convolution_pays_two_transposes(conv_model):
    """What canonical_elementwise is for: ConvertLayout alone sends the activations back to
    NCHW at the one-element scale and at the clamp's select."""
    text = through(relax_module(conv_model), relax_passes.network_to_nhwc(), "fold")["main"].script()
    assert len(re.findall(r"R\.permute_dims\(", text)) >= 2 * len(CONVS)


def test_pointwise_convolutions_become_matmuls_the_others_stay(conv_model):
    mod = through(relax_module(conv_model), relax_passes.canonical_elementwise(), relax_passes.network_to_nhwc(),
                  "fold", relax_passes.pointwise_convs_as_matmuls())
    text = mod["main"].script()
    assert text.count("R.nn.conv2d(") == len(CONVS) - 1
    assert text.count("R.matmul(") == 1


@pytest.mark.parametrize("precision_name, atol", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_engine_of_the_channels_last_network_matches_onnxruntime(conv_model, tmp_path, precision_name, atol):
    x = np.random.default_rng(0).uniform(-1, 1, SHAPE).astype(np.float32)
    assert_engine_matches_onnxruntime(conv_model, SHAPE, x, tmp_path, precision_name, atol)


@pytest.fixture(scope="module")
def squeeze_excitation_model(tmp_path_factory):
    """PP-OCRv4's squeeze-excitation: the map averaged to one pixel, two 1x1 convolutions over
    it, the map scaled by the result."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(0, 0.4, (4, 8, 1, 1)).astype(np.float32), "w0"),
             numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b0"),
             numpy_helper.from_array(rng.normal(0, 0.4, (8, 4, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1")]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
             helper.make_node("Conv", ["pooled", "w0", "b0"], ["c0"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], kernel_shape=[1, 1]),
             helper.make_node("HardSigmoid", ["c1"], ["gate"], alpha=0.2, beta=0.5),
             helper.make_node("Mul", ["x", "gate"], ["y"])]
    return saved_model(tmp_path_factory, "se", nodes, inits, [3, 8, 5, 7], "y", [3, 8, 5, 7])


def test_pointwise_convolutions_over_one_pixel_take_the_images_as_their_rows(squeeze_excitation_model, tmp_path):
    shape = (3, 8, 5, 7)
    mod = through(relax_module(squeeze_excitation_model, shape), relax_passes.canonical_elementwise(),
                  relax_passes.network_to_nhwc(), "fold", relax_passes.pointwise_convs_as_matmuls())
    text = mod["main"].script()
    assert "R.nn.conv2d(" not in text
    # both products read the pooled map as [images, channels]: 3 rows, not 3 batches of one row
    products = re.findall(r"R\.matmul\((\w+),", text)
    assert len(products) == 2
    for name in products:
        assert re.search(rf"{name}\b[^\n]*= R\.reshape\([^\n]*R\.shape\(\[3, [48]\]\)", text), text
    x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    assert_engine_matches_onnxruntime(squeeze_excitation_model, shape, x, tmp_path)


def test_an_opset_12_softmax_over_the_last_axis_runs_in_place_without_reshapes(tmp_path):
    """ONNX Softmax before opset 13 is defined on the input flattened to 2-D; over the last
    axis that is the softmax of the input itself, and the importer's reshape back to the
    output's shape (a copy of the whole output) goes."""
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["y"], axis=2)]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 11])],
                              [numpy_helper.from_array(rng.normal(0, 1, (7, 11)).astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    path = str(tmp_path / "head.onnx")
    onnx.save(model, path)
    text = relax_module(path, (2, 5, 7))["main"].script()
    assert "R.reshape(" not in text, text
    x = rng.uniform(-2, 2, (2, 5, 7)).astype(np.float32)
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    engine = str(tmp_path / "head.so")
    build.build_engine(path, "x", (2, 5, 7), "fp32", targets.select_target("llvm"), engine, log=lambda *_: None,
                       tuning_dir=None)
    np.testing.assert_allclose(runtime.load_engine(engine).run(x), expected, atol=1e-6, rtol=1e-5)


def exported_layer_norm(x):
    """Layer normalisation over the last axis as paddle2onnx exports it, op by op."""
    from tvm import relax

    mean = relax.op.mean(x, axis=[-1], keepdims=True)
    centred = relax.op.subtract(x, mean)
    variance = relax.op.mean(relax.op.power(centred, relax.const(2.0, "float32")), axis=[-1], keepdims=True)
    return relax.op.divide(centred, relax.op.sqrt(relax.op.add(variance, relax.const(1e-6, "float32"))))


@pytest.mark.parametrize("shape", [(2, 37, 64), (3, 40, 120), (5, 256)])
def test_an_exported_layer_norm_is_one_kernel_with_numpys_numbers(shape):
    """SVTR's 64-wide rows, PP-OCRv4's neck's 120, a 2-D input; the rows offset from zero (mean
    50, deviation 3), so the centring matters."""
    import tvm
    from tvm import relax as rx

    from svtr_toolkit.compile.targets import llvm
    from test_schedule_rules import main_module

    mod = main_module(exported_layer_norm, shape)
    target = targets.host_cpu_target()
    tvm_target = target.tvm_target()
    with tvm_target:
        lowered = tvm.transform.Sequential(llvm.lowering_passes(tvm_target))(mod)
    kernels = [gv.name_hint for gv, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert kernels == ["layer_norm"], kernels
    report = {}
    executable = tvm.compile(mod, tvm_target, relax_pipeline=target.module.pipeline(tvm_target, None, report))
    assert report == {"layer_norm": "row-reduction"}, report
    data = np.random.default_rng(9).normal(50.0, 3.0, shape).astype(np.float32)
    got = rx.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(data, tvm.cpu())).numpy()
    x64 = data.astype(np.float64)
    centred = x64 - x64.mean(-1, keepdims=True)
    expected = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)


@pytest.fixture(scope="module")
def swish_gelu_model(tmp_path_factory):
    """A convolution followed by a swish (x * sigmoid(x), PP-OCRv4's neck) and one followed by
    an erf GELU (SVTR's patch embedding): activations whose fast forms are kernels of their own."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32), "w0"),
             numpy_helper.from_array(rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.array(2 ** -0.5, np.float32), "r"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c0"], ["s0"]),
             helper.make_node("Mul", ["c0", "s0"], ["a0"]),
             helper.make_node("Conv", ["a0", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 1]),
             helper.make_node("Mul", ["c1", "r"], ["g0"]),
             helper.make_node("Erf", ["g0"], ["g1"]),
             helper.make_node("Add", ["g1", "one"], ["g2"]),
             helper.make_node("Mul", ["c1", "g2"], ["g3"]),
             helper.make_node("Mul", ["g3", "half"], ["y"])]
    return saved_model(tmp_path_factory, "swish_gelu", nodes, inits, SHAPE, "y", ["n", "c", "h", "w"])


def test_fast_math_forms_stay_channels_last_in_their_convolutions_kernels(swish_gelu_model, tmp_path):
    """The CPU build takes exp/erf's fast forms after the layout conversion: the swish and the
    GELU are computed in their convolution's kernel (one transpose in, one out), not as
    kernels of their own behind transposes back to NCHW; the engine keeps onnxruntime's
    numbers."""
    import tvm

    target = targets.BuildTarget(targets.host_cpu_target().spec, "t")
    mod, _ = build._relax_module(onnx_passes.load_onnx(swish_gelu_model), "x", SHAPE, "fp32", target.spec, None)
    lowered = targets.llvm.lower(mod, target.tvm_target())
    kernels = [gv.name_hint for gv, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any("conv2d" in k and "fast_exp" in k for k in kernels), kernels
    assert any("conv2d" in k and "fast_erf" in k for k in kernels), kernels
    assert "sigmoid" not in " ".join(kernels)
    assert len([k for k in kernels if "transpose" in k]) <= 2, kernels

    x = np.random.default_rng(1).uniform(-2, 2, SHAPE).astype(np.float32)
    assert_engine_matches_onnxruntime(swish_gelu_model, SHAPE, x, tmp_path)


def test_sigmoid_through_the_fast_exponential_is_sigmoid_to_float32_rounding():
    """sigmoid_as_exp + FastMathTransform, compiled for this CPU, against float64's sigmoid over
    the whole range where it is not flat: a few ulps relative, and no scalar expf calls left
    (LLVM vectorised the polynomial)."""
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1 << 16,), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(bb.emit(relax.op.sigmoid(x)))
        bb.emit_func_output(y)
    mod = relax_passes.fast_math()(bb.get())
    assert "sigmoid" not in mod.script() and "fast_exp" in mod.script()
    executable = tvm.compile(mod, targets.BuildTarget(targets.host_cpu_target().spec, "t").tvm_target())
    assert "expf" not in executable.mod.imports[0].inspect_source("asm")
    xs = np.linspace(-80, 80, 1 << 16).astype(np.float32)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(xs)).numpy().astype(np.float64)
    exact = 1 / (1 + np.exp(-xs.astype(np.float64)))
    assert np.max(np.abs(got - exact) / exact) < 64 * np.finfo(np.float32).eps


@pytest.mark.parametrize("divisor, rewritten", [(6.0, True), (np.sqrt(2.0), True), (0.25, True), (0.0, False),
                                                (np.inf, False), (1e-45, False)])
def test_a_division_by_a_constant_becomes_a_multiplication_within_one_rounding(divisor, rewritten):
    """fast_math's divisions_by_constants: x / c as x * (1 / c) where 1 / c is a finite float32;
    a power of two exactly, any other c within one rounding of the quotient. A zero, an
    infinite divisor or one whose inverse overflows float32 keeps its division."""
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4096,), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(bb.emit(relax.op.divide(x, relax.const(divisor, "float32"))))
        bb.emit_func_output(y)
    mod = relax_passes.divisions_by_constants()(bb.get())
    script = mod.script()
    assert ("R.multiply" in script and "R.divide" not in script) == rewritten, script
    if not rewritten:
        return
    executable = tvm.compile(mod, targets.BuildTarget(targets.host_cpu_target().spec, "t").tvm_target())
    xs = np.random.default_rng(0).uniform(-1e3, 1e3, 4096).astype(np.float32)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(xs)).numpy()
    quotient = xs / np.float32(divisor)
    ulps = np.abs(got.view(np.int32).astype(np.int64) - quotient.view(np.int32).astype(np.int64))
    assert ulps.max() <= (0 if np.log2(divisor) == int(np.log2(divisor)) else 1), ulps.max()


def test_chains_of_constant_shifts_and_scales_fold_where_nothing_else_reads_the_link():
    """constant_chains: PP-OCRv4's epilogue, ((x + bias) + shift) then hardswish, whose
    (h * (1 / 6)) * scale + offset: the bias and shift become one constant, 1/6 and the scale
    one factor; x + shift + 3, whose link (x + shift) hardswish also multiplies by, keeps its
    two additions. The values within a few float32 roundings of the chain's."""
    import tvm
    from tvm import relax

    rng = np.random.default_rng(3)
    bias = rng.uniform(-1, 1, (1, 8)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((64, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            shifted = bb.emit(relax.op.add(bb.emit(relax.op.add(x, relax.const(bias))), relax.const(0.25, "float32")))
            clipped = bb.emit(relax.op.minimum(relax.op.maximum(
                bb.emit(relax.op.add(shifted, relax.const(3.0, "float32"))), relax.const(0.0, "float32")),
                relax.const(6.0, "float32")))
            h = bb.emit(relax.op.multiply(bb.emit(relax.op.multiply(shifted, clipped)), relax.const(1 / 6, "float32")))
            y = bb.emit_output(bb.emit(relax.op.add(relax.op.multiply(relax.const(0.7, "float32"), h),
                                                    relax.const(-0.01, "float32"))))
        bb.emit_func_output(y)
    before = bb.get()
    after = relax_passes.constant_chains()(before)

    def count(mod, op):
        return mod.script().count(f"R.{op}(")

    assert (count(before, "add"), count(before, "multiply")) == (4, 3)
    assert (count(after, "add"), count(after, "multiply")) == (3, 2), after.script()
    target = targets.BuildTarget(targets.host_cpu_target().spec, "t").tvm_target()
    xs = rng.uniform(-8, 8, (64, 8)).astype(np.float32)
    got, want = (relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())["main"](tvm.runtime.tensor(xs)).numpy()
                 for mod in (after, before))
    np.testing.assert_allclose(got, want, rtol=4 * np.finfo(np.float32).eps, atol=1e-6)


@pytest.mark.parametrize("layout, x_shape, w_shape, padding, window", [
    # SVTR's rectifier ends with a 3x3 convolution over a 1x2 map: two of its window rows read
    # only padding
    ("NHWC", (4, 1, 2, 16), (3, 3, 16, 32), (1, 1, 1, 1), (1, 3)),
    ("NCHW", (2, 8, 1, 6), (16, 8, 3, 3), (1, 1, 1, 1), (1, 3)),
    # a 5x5 window, stride 2, over a 3x1 map: every row reaches it from one output row or the
    # other, only the middle column reaches the one-pixel-wide map
    ("NHWC", (2, 3, 1, 8), (5, 5, 8, 16), (2, 2, 2, 2), (5, 1)),
    # every tap reads the map somewhere: left alone
    ("NHWC", (2, 2, 5, 8), (3, 3, 8, 16), (1, 1, 1, 1), (3, 3)),
    # a window that steps over the map (stride 4, padding 3 before a one-pixel map): no tap is
    # cut, the convolution is left as it is
    ("NHWC", (2, 1, 1, 8), (1, 1, 8, 16), (3, 3, 0, 0), (1, 1)),
])
def test_window_taps_that_read_only_padding_are_dropped_with_the_same_numbers(layout, x_shape, w_shape, padding,
                                                                              window):
    import tvm
    from tvm import relax

    rng = np.random.default_rng(5)
    weight = rng.uniform(-1, 1, w_shape).astype(np.float32)
    kernel_layout = "HWIO" if layout == "NHWC" else "OIHW"
    strides = {5: (2, 2), 1: (4, 4)}.get(w_shape[0], (1, 1))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(x, relax.const(weight), strides=strides, padding=padding,
                                                  data_layout=layout, kernel_layout=kernel_layout))
        bb.emit_func_output(y)
    before = bb.get()
    after = relax.transform.FoldConstant()(relax_passes.dead_window_taps()(before))
    (conv,) = re.findall(r"R\.nn\.conv2d\(.*", after.script())
    kept = [int(d) for d in after["main"].body.blocks[0].bindings[0].value.args[1].ty.shape]
    hw = [kernel_layout.index(a) for a in "HW"]
    assert (kept[hw[0]], kept[hw[1]]) == window, conv
    target = targets.BuildTarget(targets.host_cpu_target().spec, "t").tvm_target()
    xs = rng.uniform(-1, 1, x_shape).astype(np.float32)
    got, want = (relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())["main"](tvm.runtime.tensor(xs)).numpy()
                 for mod in (after, before))
    assert got.shape == want.shape
    # the dropped terms were products with zeros: the same sums, to the rounding of their order
    np.testing.assert_allclose(got, want, rtol=0, atol=8 * np.finfo(np.float32).eps * np.abs(want).max())


def test_a_window_cut_to_one_pixel_goes_on_as_a_pointwise_product():
    """A 3x3 convolution over a 1x1 map reads one weight tap: cut to 1x1, stride 1, no
    padding, it is a matmul for the build's passes."""
    import tvm
    from tvm import relax

    from svtr_toolkit.compile.targets import llvm

    weight = np.random.default_rng(6).uniform(-1, 1, (3, 3, 16, 32)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 1, 1, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(x, relax.const(weight), padding=1, data_layout="NHWC",
                                                  kernel_layout="HWIO"))
        bb.emit_func_output(y)
    target = targets.BuildTarget(targets.host_cpu_target().spec, "t").tvm_target()
    with target:
        lowered = tvm.transform.Sequential(llvm.lowering_passes(target))(bb.get())
    names = [gv.name_hint for gv, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert names and not any("conv2d" in n for n in names) and any("matmul" in n for n in names), names
