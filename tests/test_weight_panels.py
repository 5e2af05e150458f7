"""Constant weights of matmuls and convolutions packed into register-tile panels at build time
(compile.relax_passes.pack_weights): the panel layout per target, zero-padded last panels,
and engines bitwise equal to the same build without packing."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from svtr_toolkit import runtime
from svtr_toolkit.compile import build, relax_passes, targets
from svtr_toolkit.compile.schedule_rules.common import CpuModel

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

AVX2 = {"kind": "llvm", "mcpu": "znver3", "mattr": ["+avx2", "+fma"], "num-cores": 2}
AVX512 = {"kind": "llvm", "mcpu": "x86-64", "mattr": ["+avx2", "+fma", "+avx512f"], "num-cores": 2}
NEON = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "neoverse-n1", "mattr": ["+neon"], "num-cores": 2}


def single_op_module(x_shape, build_op):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(build_op(x))
        bb.emit_func_output(out)
    return bb.get()


def packed_constants(mod):
    """The constant operands of the call_tir bindings in ``mod``'s main, as numpy arrays."""
    found = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op.name == "relax.call_tir":
                found += [arg.value.numpy() for arg in value.args[1].fields if isinstance(arg, tvm.ir.GenericConst)]
    return found


def pack(spec, mod):
    target = tvm.target.Target(spec)
    with target:
        return relax_passes.pack_weights(target)(mod)


@pytest.mark.parametrize("target, n, nr, padded", [
    (AVX2, 128, 16, 128), (AVX2, 48, 16, 48), (AVX2, 40, 8, 40), (AVX512, 128, 64, 128), (AVX512, 96, 48, 96),
    (NEON, 128, 16, 128), (AVX2, 37, 8, 40), (AVX512, 6625, 64, 6656), (AVX512, 120, 64, 128),
    (AVX512, 60, 64, 64), (AVX2, 32, None, None), (AVX512, 64, None, None), (NEON, 16, None, None)])
def test_matmul_weights_packed_into_register_tile_panels(target, n, nr, padded):
    """A constant [K, N] weight becomes [padded / nr, K, nr] panels of the register tile's width
    (the most vectors, up to four, that divide N and leave six rows of accumulators); a width of
    no whole vectors gets zero columns up to whole vectors (up to a wider tile where that costs at
    most 1/16 more work, and to one whole tile); one tile wide already (N a whole number of
    vectors, up to four): left alone."""
    weight = np.random.default_rng(n).normal(size=(24, n)).astype(np.float32)
    packed = pack(target, single_op_module((2, 5, 24), lambda x: relax.op.matmul(x, relax.const(weight))))
    text = packed["main"].script()
    constants = packed_constants(packed)
    if nr is None:
        assert "R.matmul" in text and not constants
        return
    assert "R.matmul" not in text and len(constants) == 1
    (panels,) = constants
    assert panels.shape == (padded // nr, 24, nr)
    full = np.concatenate([weight, np.zeros((24, padded - n), np.float32)], axis=1)
    for tile in range(padded // nr):
        np.testing.assert_array_equal(panels[tile], full[:, tile * nr:(tile + 1) * nr])


@pytest.mark.parametrize("out_channels, nr, padded", [(128, 64, 128), (60, 64, 64), (120, 64, 128), (64, None, None)])
def test_conv_weights_packed_into_panels_over_the_whole_window(out_channels, nr, padded):
    """An NHWC/HWIO KxK convolution's weight [KH, KW, Ci, Co] becomes [padded / nr, KH, KW, Ci, nr]
    (AVX-512); pointwise and depthwise convolutions are not this rewrite's."""
    weight = np.random.default_rng(1).normal(size=(3, 3, 16, out_channels)).astype(np.float32)

    def conv(x):
        return relax.op.nn.conv2d(x, relax.const(weight), padding=1, data_layout="NHWC", kernel_layout="HWIO")

    packed = pack(AVX512, single_op_module((2, 4, 10, 16), conv))
    constants = packed_constants(packed)
    if nr is None:
        assert not constants and "R.nn.conv2d" in packed["main"].script()
        return
    (panels,) = constants
    assert panels.shape == (padded // nr, 3, 3, 16, nr)
    full = np.concatenate([weight, np.zeros((3, 3, 16, padded - out_channels), np.float32)], axis=-1)
    np.testing.assert_array_equal(panels[-1], full[..., padded - nr:])


def test_matmuls_by_activations_are_not_packed():
    bb = relax.BlockBuilder()
    a, b = relax.Var("a", relax.TensorType((2, 40, 24), "float32")), relax.Var("b", relax.TensorType((24, 256), "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(a, b))
        bb.emit_func_output(out)
    text = pack(AVX2, bb.get())["main"].script()
    assert "R.matmul" in text and "call_tir" not in text


def save(path, nodes, inits, shape, out_shape):
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def mlp_model(path, shape, n1, n2):
    """MatMul + bias + Relu, then MatMul + bias: widths n1 and n2."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), name)
             for name, s in [("w1", (shape[-1], n1)), ("b1", (n1,)), ("w2", (n1, n2)), ("b2", (n2,))]]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]), helper.make_node("MatMul", ["r1", "w2"], ["m2"]),
             helper.make_node("Add", ["m2", "b2"], ["y"])]
    return save(path, nodes, inits, shape, [*shape[:-1], n2])


def conv_model(path, shape, out_channels, kernel):
    """Conv (padding to keep the size) + bias, then Relu."""
    rng = np.random.default_rng(out_channels)
    weight = rng.normal(0, 0.3, (out_channels, shape[1], *kernel)).astype(np.float32)
    pads = [k // 2 for k in kernel] * 2
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(kernel), pads=pads),
             helper.make_node("Relu", ["c"], ["y"])]
    inits = [numpy_helper.from_array(weight, "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, out_channels).astype(np.float32), "b")]
    return save(path, nodes, inits, shape, [shape[0], out_channels, shape[2], shape[3]])


def host_lanes():
    return CpuModel.of(targets.host_cpu_target().tvm_target()).lanes(32)


MODELS = {
    # widths of 6 and 5 vectors of the host (two tile widths), and one of no whole vectors
    "mlp": lambda path, lanes: (mlp_model(path, (2, 5, 24), 6 * lanes, 5 * lanes - 3), (2, 5, 24)),
    # a 1x3 convolution (PP-OCRv4's neck) of no whole vectors; a 3x3 one of 6 vectors
    "conv1x3-odd": lambda path, lanes: (conv_model(path, (2, 24, 1, 20), 6 * lanes + 4, (1, 3)), (2, 24, 1, 20)),
    "conv3x3": lambda path, lanes: (conv_model(path, (2, 16, 4, 12), 6 * lanes, (3, 3)), (2, 16, 4, 12)),
}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_engine_with_packed_weights_matches_onnxruntime_and_the_unpacked_engine_bitwise(
        tmp_path, monkeypatch, model, precision, atol):
    """Packing changes where the weights lie, not the arithmetic: the same sums in the same
    order, so the engine's outputs are bitwise those of an engine built without the pass. The
    widths follow the host's vector lanes; fp16 is pinned to fp16 values in fp32 arithmetic
    (plain products) whatever the CPU, since fp16 CPUs default to the K-chunked plan."""
    path, shape = MODELS[model](str(tmp_path / "m.onnx"), host_lanes())
    x = np.random.default_rng(2).uniform(-1, 1, shape).astype(np.float32)
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    def build_and_run(name):
        engine = str(tmp_path / name)
        build.build_engine(path, "x", shape, precision, targets.select_target("llvm"), engine, log=lambda *_: None,
                           tuning_dir=None, accumulate={"mode": "off", "chunk": None})
        with open(engine, "rb") as f:
            image = f.read()
            kernels_packed = b"matmul_packed" in image or b"conv2d_packed" in image
        return runtime.load_engine(engine).run(x), kernels_packed

    packed, kernels_packed = build_and_run("packed.so")
    assert kernels_packed
    np.testing.assert_allclose(packed, expected, atol=atol, rtol=0)
    monkeypatch.setattr(relax_passes, "pack_weights",
                        lambda target: tvm.transform.module_pass(lambda mod, ctx: mod, opt_level=0))
    unpacked, kernels_packed = build_and_run("unpacked.so")
    assert not kernels_packed
    np.testing.assert_array_equal(packed, unpacked)
