"""Small ONNX graphs with the operators SVTR's export contains, for fast engine tests."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def tiny_recogniser(path, with_grid_sample=True, seed=0, batch="N"):
    """x [N,3,8,16] -> (GridSample rectifier) -> conv -> clamps -> [N,4,5] softmax.

    Dynamic batch like paddle2onnx's output; the Resize carries empty roi/scales inputs
    like paddle2onnx writes them.
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "x"
    if with_grid_sample:
        inits += [_init("g_w", rng.normal(0, 0.3, (2, 3, 3, 3))), _init("g_b", np.zeros(2))]
        nodes += [
            helper.make_node("Conv", ["x", "g_w", "g_b"], ["g_conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Tanh", ["g_conv"], ["g_tanh"]),
            helper.make_node("Transpose", ["g_tanh"], ["grid"], perm=[0, 2, 3, 1]),
            helper.make_node("GridSample", ["x", "grid"], ["rectified"], align_corners=1),
        ]
        current = "rectified"
    inits += [
        _init("w1", rng.normal(0, 0.5, (4, 3, 3, 3))), _init("b1", rng.normal(0, 0.1, 4)),
        _init("lo", 0.0), _init("hi", 6.0),
        _init("roi", np.zeros(0)), _init("scales", np.zeros(0)),
        numpy_helper.from_array(np.array([0, 4, 20], dtype=np.int64), "seq_shape"),
        _init("w2", rng.normal(0, 0.5, (20, 5))),
    ]
    nodes += [
        helper.make_node("Conv", [current, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["clip"]),
        helper.make_node("HardSwish", ["clip"], ["hsw"]),
        helper.make_node("HardSigmoid", ["hsw"], ["hsg"], alpha=0.25, beta=0.4),
        helper.make_node("Shape", ["hsg"], ["shape"]),
        helper.make_node("Slice", ["shape", "s0", "s1"], ["batch_dim"]),
        helper.make_node("Concat", ["batch_dim", "tail"], ["sizes"], axis=0),
        helper.make_node("Resize", ["hsg", "roi", "scales", "sizes"], ["small"], mode="linear"),
        helper.make_node("Reshape", ["small", "seq_shape"], ["seq"]),
        helper.make_node("MatMul", ["seq", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    inits += [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "s0"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "s1"),
        numpy_helper.from_array(np.array([4, 4, 5], dtype=np.int64), "tail"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 16])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 4, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)
