"""What the model costs: FLOPs per image counted from the ONNX graph, and its image shape."""
from __future__ import annotations

import math

from ..compile.onnx_passes import data_inputs, static_input
from ..errors import ToolkitError


def model_image_shape(onnx_path: str) -> tuple:
    """(C, H, W) of the model's data input, which must be static past the batch dimension."""
    import onnx

    dims = data_inputs(onnx.load(onnx_path))[0].type.tensor_type.shape.dim
    chw = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in list(dims)[1:])
    if len(chw) != 3 or None in chw:
        raise ToolkitError(f"{onnx_path}: the input's image shape is not static ({list(chw)}); name a model preset")
    return chw


def _shape_table(model) -> dict:
    shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _known(shape) -> bool:
    return shape is not None and None not in shape


def node_flops(op_type: str, in_shapes: list, out_shape, attrs: dict):
    """FLOPs (2 per multiply-add) of one MatMul/Gemm/Conv, or None if a shape is unknown."""
    if op_type == "MatMul":
        a = in_shapes[0]
        if not _known(a) or not _known(out_shape) or not a:
            return None
        k = a[-1]
        return 2.0 * math.prod(out_shape) * k
    if op_type == "Gemm":
        a = in_shapes[0]
        if not _known(a) or not _known(out_shape):
            return None
        k = a[0] if attrs.get("transA", 0) else a[1]
        return 2.0 * math.prod(out_shape) * k
    if op_type == "Conv":
        w = in_shapes[1]
        if not _known(w) or not _known(out_shape):
            return None
        return 2.0 * math.prod(out_shape) * math.prod(w[1:])  # w[1] is already Cin / group
    return None


def count_model_flops(onnx_path: str, input_shape) -> dict:
    """FLOPs per image of the model's MatMul/Gemm/Conv nodes at ``input_shape`` (N, C, H, W),
    from ONNX shape inference (2 FLOPs per multiply-add).

    Elementwise ops, softmax, norms and pooling are not counted (a few percent at most).
    Where shape inference leaves some nodes unknown (reshapes computed at run time), the
    count is redone on the model with its input made static (onnxsim, as engines are built).
    """
    import onnx

    model = onnx.load(onnx_path)
    dims = data_inputs(model)[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, input_shape):
        if not (dim.HasField("dim_value") and dim.dim_value > 0):
            dim.Clear()
            dim.dim_value = value
    counted = _count(model, input_shape[0])
    if counted["nodes_with_unknown_shape"]:
        try:
            static = static_input(onnx.load(onnx_path), data_inputs(model)[0].name, tuple(input_shape))
        except ToolkitError:
            return counted
        recounted = _count(static, input_shape[0])
        if recounted["nodes_with_unknown_shape"] < counted["nodes_with_unknown_shape"]:
            return recounted
    return counted


def _count(model, batch: int) -> dict:
    from onnx import helper, shape_inference

    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = _shape_table(inferred)
    by_op, unknown = {}, 0
    for node in inferred.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        flops = node_flops(node.op_type, [shapes.get(n) for n in node.input], shapes.get(node.output[0]), attrs)
        if flops is None:
            unknown += 1
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0.0) + flops
    total = sum(by_op.values())
    return {
        "flops_per_image": total / batch,
        "by_op_per_image": {k: v / batch for k, v in sorted(by_op.items())},
        "nodes_with_unknown_shape": unknown,
    }
