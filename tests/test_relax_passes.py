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
