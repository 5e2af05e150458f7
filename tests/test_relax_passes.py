"""Relax rewrites applied when building engines."""
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
# merges, an asymmetric pad, then a 1x1 and a grouped conv, which keep NCHW
CONVS = [((3, 3), (2, 2), (1, 1, 1, 1), 1), ((3, 3), (2, 1), (1, 1, 1, 1), 1),
         ((2, 3), (1, 1), (0, 1, 1, 0), 1), ((1, 1), (1, 1), (0, 0, 0, 0), 1), ((3, 3), (1, 1), (1, 1, 1, 1), 2)]


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory):
    rng = np.random.default_rng(3)
    nodes, inits, current, channels = [], [], "x", SHAPE[1]
    for i, (kernel, strides, pads, groups) in enumerate(CONVS):
        out_channels = 6 if i % 2 == 0 else 4
        weight = rng.normal(0, 0.4, (out_channels, channels // groups, *kernel)).astype(np.float32)
        inits += [numpy_helper.from_array(weight, f"w{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.1, out_channels).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [current, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=list(kernel),
                                   strides=list(strides), pads=list(pads), group=groups),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        current, channels = f"r{i}", out_channels
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["n", "c", "h", "w"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    path = str(tmp_path_factory.mktemp("convs") / "convs.onnx")
    onnx.save(model, path)
    return path


def test_kxk_convs_go_nhwc_the_rest_stay(conv_model):
    prepared = onnx_passes.prepare_onnx(onnx_passes.load_onnx(conv_model), "x", SHAPE)
    mod, _ = precision.to_relax(prepared, "x", SHAPE, "fp32")
    text = relax_passes.convs_to_nhwc()(mod).script()
    assert len(re.findall(r"R\.nn\.conv2d\(", text)) == len(CONVS)
    assert text.count('data_layout="NHWC", kernel_layout="HWIO"') == 3
    assert text.count('data_layout="NCHW", kernel_layout="OIHW"') == 2  # the 1x1 and the grouped conv


@pytest.mark.parametrize("precision, atol", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_engine_with_nhwc_convs_matches_onnxruntime(conv_model, tmp_path, precision, atol):
    x = np.random.default_rng(0).uniform(-1, 1, SHAPE).astype(np.float32)
    expected = ort.InferenceSession(conv_model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    path = str(tmp_path / f"convs_{precision}.so")
    build.build_engine(conv_model, "x", SHAPE, precision, targets.select_target("llvm"), path,
                        log=lambda *_: None, tuning_dir=None)
    got = runtime.load_engine(path).run(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0)


def _conv_model(path, out_channels, kernel=(3, 3), in_channels=8, shape=(2, 8, 3, 10)):
    """One Conv (pads 1 where the kernel is 3 wide) + Relu, random weights and bias."""
    rng = np.random.default_rng(out_channels)
    weight = rng.normal(0, 0.3, (out_channels, in_channels, *kernel)).astype(np.float32)
    pads = [k // 2 for k in kernel] * 2
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(kernel), pads=pads),
         helper.make_node("Relu", ["c"], ["y"])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])],
        [numpy_helper.from_array(weight, "w"),
         numpy_helper.from_array(rng.normal(0, 0.1, out_channels).astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("out_channels, padded", [(60, 64), (20, 24), (17, 24), (24, None), (16, None), (12, None)])
def test_nhwc_conv_output_channels_padded_to_whole_vectors(tmp_path, out_channels, padded):
    shape = (2, 8, 3, 10)
    path = _conv_model(str(tmp_path / "c.onnx"), out_channels, shape=shape)
    prepared = onnx_passes.prepare_onnx(onnx_passes.load_onnx(path), "x", shape)
    mod, _ = precision.to_relax(prepared, "x", shape, "fp32")
    text = relax_passes.conv_channels_to_whole_vectors()(relax_passes.convs_to_nhwc()(mod)).script()
    assert 'data_layout="NHWC"' in text
    if padded is None:
        assert "R.strided_slice" not in text and "R.nn.pad" not in text
    else:
        assert re.search(rf"R\.Tensor\(\(2, 3, 10, {padded}\), dtype=\"float32\"\) = R\.nn\.conv2d", text), text
        assert re.search(rf"R\.Tensor\(\(2, 3, 10, {out_channels}\), dtype=\"float32\"\) = R\.strided_slice", text)


@pytest.mark.parametrize("kernel", [(3, 3), (1, 3)])
def test_engine_with_padded_conv_channels_matches_onnxruntime(tmp_path, kernel):
    # 60 output channels: PP-OCRv4's neck width, which split into 15-lane vector tiles before
    shape = (2, 24, 1, 20) if kernel == (1, 3) else (2, 24, 4, 12)
    path = _conv_model(str(tmp_path / "c.onnx"), 60, kernel=kernel, in_channels=24, shape=shape)
    x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    engine = str(tmp_path / "c.so")
    build.build_engine(path, "x", shape, "fp32", targets.select_target("llvm"), engine, log=lambda *_: None,
                       tuning_dir=None)
    got = runtime.load_engine(engine).run(x)
    assert got.shape == expected.shape == (shape[0], 60, shape[2], shape[3])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_padded_conv_is_tiled_with_whole_vectors():
    """The padded convolution's kernel gets an output-channel tile of whole vectors (a 15-lane
    tile was what LLVM spilled lane by lane)."""
    import tvm
    from tvm import relax

    from svtr_toolkit.compile.schedule_rules import ApplyRules
    from svtr_toolkit.compile.targets import llvm

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 96, 1, 40), "float32"))
    w = relax.Var("w", relax.TensorType((60, 96, 1, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, w, padding=(0, 1)))
        bb.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2, "mattr": ["+avx2", "+fma"]})
    with target:
        lowered = tvm.transform.Sequential(llvm.lowering_passes(target) + [ApplyRules()])(bb.get())
    convs = [f.script() for gv, f in lowered.functions_items() if "conv2d" in gv.name_hint]
    assert len(convs) == 1
    widths = {int(v) for v in re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", convs[0])}
    assert widths and all(v % 8 == 0 for v in widths), widths


AVX2 = {"kind": "llvm", "mcpu": "znver3", "mattr": ["+avx2", "+fma"], "num-cores": 2}
AVX512 = {"kind": "llvm", "mcpu": "x86-64", "mattr": ["+avx2", "+fma", "+avx512f"], "num-cores": 2}
NEON = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "neoverse-n1", "mattr": ["+neon"], "num-cores": 2}


def _weight_matmul_module(x_shape, weight):
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(x, relax.const(weight)))
        bb.emit_func_output(out)
    return bb.get()


def _packed_constants(mod):
    """The constant operands of the call_tir bindings in ``mod``'s main, as numpy arrays."""
    import tvm
    from tvm import relax

    found = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op.name == "relax.call_tir":
                found += [arg.value.numpy() for arg in value.args[1].fields if isinstance(arg, tvm.ir.GenericConst)]
    return found


@pytest.mark.parametrize("target, n, nr", [(AVX2, 128, 16), (AVX2, 48, 16), (AVX2, 40, 8), (AVX512, 128, 32),
                                           (NEON, 128, 8), (AVX2, 32, None), (AVX2, 37, None), (AVX512, 64, None),
                                           (NEON, 16, None)])
def test_matmul_weights_packed_into_register_tile_panels(target, n, nr):
    """A constant [K, N] weight becomes [N / nr, K, nr] panels of the register tile's width (two
    vectors, or one where two do not divide N); one tile wide already (N up to four vectors) or
    no whole vectors: left alone."""
    import tvm

    weight = np.random.default_rng(n).normal(size=(24, n)).astype(np.float32)
    tvm_target = tvm.target.Target(target)
    with tvm_target:
        packed = relax_passes.pack_matmul_weights(tvm_target)(_weight_matmul_module((2, 5, 24), weight))
    text = packed["main"].script()
    constants = _packed_constants(packed)
    if nr is None:
        assert "R.matmul" in text and not constants
        return
    assert "R.matmul" not in text and len(constants) == 1
    (panels,) = constants
    assert panels.shape == (n // nr, 24, nr)
    for tile in range(n // nr):
        np.testing.assert_array_equal(panels[tile], weight[:, tile * nr:(tile + 1) * nr])


def test_matmuls_by_activations_are_not_packed():
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    a, b = relax.Var("a", relax.TensorType((2, 40, 24), "float32")), relax.Var("b", relax.TensorType((24, 64), "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(a, b))
        bb.emit_func_output(out)
    target = tvm.target.Target(AVX2)
    with target:
        text = relax_passes.pack_matmul_weights(target)(bb.get())["main"].script()
    assert "R.matmul" in text and "call_tir" not in text


def _mlp_model(path, shape=(2, 5, 24), lanes=8):
    """MatMul + bias + Relu, then MatMul + bias: widths of 6 and 5 vectors of ``lanes`` fp32
    lanes (48 and 40 on AVX2), whose register tiles are two vectors and one: both packed."""
    rng = np.random.default_rng(7)
    n1, n2 = 6 * lanes, 5 * lanes
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), name)
             for name, s in [("w1", (shape[-1], n1)), ("b1", (n1,)), ("w2", (n1, n2)), ("b2", (n2,))]]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["a1"]),
         helper.make_node("Relu", ["a1"], ["r1"]), helper.make_node("MatMul", ["r1", "w2"], ["m2"]),
         helper.make_node("Add", ["m2", "b2"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape[0], shape[1], n2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("precision, atol", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_engine_with_packed_weights_matches_onnxruntime_and_the_unpacked_engine_bitwise(
        tmp_path, monkeypatch, precision, atol):
    """Packing changes where the weights lie, not the arithmetic: the same sums in the same
    order, so the engine's outputs are bitwise those of an engine built without the pass.
    The widths follow the host's vector lanes; fp16 is pinned to fp16 values in fp32
    arithmetic (plain matmuls) whatever the CPU, since fp16 CPUs default to the K-chunked plan."""
    import tvm

    from svtr_toolkit.compile.schedule_rules.common import CpuShape

    shape = (2, 5, 24)
    lanes = CpuShape.of(targets.host_cpu_target().tvm_target()).lanes(32)
    path = _mlp_model(str(tmp_path / "mlp.onnx"), shape, lanes)
    x = np.random.default_rng(2).uniform(-1, 1, shape).astype(np.float32)
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    def build_and_run(name):
        engine = str(tmp_path / name)
        build.build_engine(path, "x", shape, precision, targets.select_target("llvm"), engine, log=lambda *_: None,
                           tuning_dir=None, accumulate={"mode": "off", "chunk": None})
        with open(engine, "rb") as f:
            kernels_packed = b"matmul_packed" in f.read()
        return runtime.load_engine(engine).run(x), kernels_packed

    packed, kernels_packed = build_and_run("packed.so")
    assert kernels_packed
    np.testing.assert_allclose(packed, expected, atol=atol, rtol=0)
    monkeypatch.setattr(relax_passes, "pack_matmul_weights",
                        lambda target: tvm.transform.module_pass(lambda mod, ctx: mod, opt_level=0))
    unpacked, kernels_packed = build_and_run("unpacked.so")
    assert not kernels_packed
    np.testing.assert_array_equal(packed, unpacked)
