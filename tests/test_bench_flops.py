"""svtr_toolkit.bench.flops: FLOPs per image counted from an ONNX graph, at the model's image shape."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from svtr_toolkit import bench
from svtr_toolkit.errors import ToolkitError


def test_node_flops_formulas():
    assert bench.node_flops("MatMul", [[2, 4, 8], [8, 3]], [2, 4, 3], {}) == 2 * 2 * 4 * 3 * 8
    assert bench.node_flops("Gemm", [[5, 7], [7, 3]], [5, 3], {}) == 2 * 5 * 3 * 7
    assert bench.node_flops("Gemm", [[7, 5], [7, 3]], [5, 3], {"transA": 1}) == 2 * 5 * 3 * 7
    # grouped conv: weight [Cout, Cin/group, kh, kw]
    assert bench.node_flops("Conv", [[1, 4, 8, 8], [6, 2, 3, 3]], [1, 6, 8, 8], {"group": 2}) == 2 * 6 * 64 * 2 * 9
    assert bench.node_flops("MatMul", [[None, 4, 8], [8, 3]], [None, 4, 3], {}) is None
    assert bench.node_flops("Relu", [[1]], [1], {}) is None


def _tiny_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.zeros((8, 5), np.float32), "m")
    shape = numpy_helper.from_array(np.array([0, 32, 8], np.int64), "shape")
    g = numpy_helper.from_array(np.zeros((5, 2), np.float32), "g")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),  # [N,4,8,8]
        helper.make_node("Reshape", ["c", "shape"], ["r"]),  # [N,32,8]
        helper.make_node("MatMul", ["r", "m"], ["mm"]),  # [N,32,5]
        helper.make_node("ReduceMean", ["mm"], ["red"], axes=[1], keepdims=0),  # [N,5]
        helper.make_node("Gemm", ["red", "g"], ["y"]),  # [N,2]
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], [w, m, shape, g])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)


def test_count_model_flops_on_a_dynamic_batch_graph(tmp_path):
    path = str(tmp_path / "tiny.onnx")
    _tiny_model(path)
    got = bench.count_model_flops(path, input_shape=(1, 3, 8, 8))
    conv = 2 * 4 * 8 * 8 * 3 * 9
    matmul = 2 * 32 * 5 * 8
    gemm = 2 * 1 * 2 * 5
    assert got["nodes_with_unknown_shape"] == 0
    assert got["by_op_per_image"] == {"Conv": conv, "Gemm": gemm, "MatMul": matmul}
    assert got["flops_per_image"] == conv + matmul + gemm
    per_image_at_4 = bench.count_model_flops(path, input_shape=(4, 3, 8, 8))["flops_per_image"]
    assert per_image_at_4 == pytest.approx(conv + matmul + gemm)


def test_flops_of_a_tiny_model_counted_two_ways(tmp_path):
    """The graph count against the arithmetic of its one conv and one matmul, at the image
    shape read from the model itself (what the benchmark uses when no preset is named)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.zeros((5, 3, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.zeros((12, 7), np.float32), "m")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("MatMul", ["c", "m"], ["y"])], "two", [x], [y], [w, m])
    path = str(tmp_path / "two.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    chw = bench.model_image_shape(path)
    assert chw == (3, 10, 12)
    counted = bench.count_model_flops(path, (1, *chw))
    conv_macs = 5 * 10 * 12 * (3 * 3 * 3)  # every output element: one 3x3x3 window
    matmul_macs = 5 * 10 * 7 * 12  # [5, 10, 12] x [12, 7]
    assert counted["flops_per_image"] == 2 * (conv_macs + matmul_macs)


def test_model_image_shape_needs_static_dims(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", 12])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = str(tmp_path / "dyn.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    with pytest.raises(ToolkitError, match="not static"):
        bench.model_image_shape(path)
