"""Small ONNX graph rewrites that TVM's Relax importer and mixed precision need.

Each pass takes and returns an ``onnx.ModelProto`` and keeps the model's numerics (the
tests check every pass against onnxruntime on the original graph).
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ToolkitError, first_line


def _constant_values(model):
    """name -> numpy array for initializers and Constant nodes."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def data_inputs(model: onnx.ModelProto) -> list:
    """Graph inputs (ValueInfoProto) that carry data: old exporters also list initializers as inputs."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def static_input(model: onnx.ModelProto, input_name: str, shape: tuple) -> onnx.ModelProto:
    """Pin the input to ``shape`` and fold the shape arithmetic with onnxsim.

    Relax's importer cannot follow paddle2onnx's dynamic-batch Reshape chains, so the
    engine is always built from a static model. A shape that contradicts the model's fixed
    dimensions, or that its graph cannot propagate, is a user error.
    """
    import onnxsim

    inputs = {i.name: i for i in model.graph.input}
    real_inputs = [i.name for i in data_inputs(model)]
    if input_name not in inputs:
        raise ToolkitError(f"the model has no input '{input_name}' (its inputs: {', '.join(real_inputs)})")
    if len(real_inputs) != 1:
        raise ToolkitError(f"expected a model with one input, found {len(real_inputs)}: {', '.join(real_inputs)}")
    dims = inputs[input_name].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ToolkitError(f"input '{input_name}' has rank {len(dims)}, but the shape asked for has {len(shape)} dimensions")
    for axis, (dim, want) in enumerate(zip(dims, shape)):
        if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != want:
            fixed = [d.dim_value if d.HasField("dim_value") else "?" for d in dims]
            raise ToolkitError(
                f"input '{input_name}' has shape {fixed}; it cannot take {list(shape)} (axis {axis} is fixed to {dim.dim_value})"
            )
    try:
        simplified, ok = onnxsim.simplify(model, overwrite_input_shapes={input_name: list(shape)})
    except Exception as exc:  # onnxsim surfaces shape-inference failures as plain exceptions
        raise ToolkitError(f"the model cannot take input shape {list(shape)}: {first_line(exc)}")
    if not ok:
        raise ToolkitError(f"onnxsim could not validate the model at input shape {list(shape)}")
    return simplified


def drop_empty_resize_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """paddle2onnx gives Resize empty roi/scales tensors; ONNX means 'absent' by an empty name.

    Relax's importer otherwise rejects the node ("Only one of scales and sizes can be provided").
    """
    values = _constant_values(model)
    for node in model.graph.node:
        if node.op_type != "Resize":
            continue
        for slot in (1, 2):  # roi, scales
            if slot < len(node.input) and node.input[slot] in values and values[node.input[slot]].size == 0:
                node.input[slot] = ""
    return model


def _scalar(model, name, value):
    model.graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
    return name


def _clamp_node(op: str, value: str, bound: str, out: str):
    """max(value, bound) or min(value, bound) as a select against the bound: exact.

    Not ONNX Max/Min: TVM imports those through stack + reduce with the bound broadcast to
    the full activation shape, and constant folding then stores that broadcast in the engine
    (hundreds of MiB for PP-OCRv4's HardSwish layers at batch 32). Not bound + relu(value -
    bound) either: that rounds, and the STN's sampling grid passes through a clamp. (Kernels
    with the select's boolean intermediate are elementwise: MetaSchedule, whose search spun on
    them, is not given elementwise kernels.)
    """
    test = helper.make_node("Less" if op == "Max" else "Greater", [value, bound], [out + "_past"])
    return [test, helper.make_node("Where", [out + "_past", bound, value], [out])]


def decompose_clamps(model: onnx.ModelProto) -> onnx.ModelProto:
    """Clip, HardSwish and HardSigmoid as elementwise selects, Relu, Mul and Add.

    Relax's ToMixedPrecision crashes on the call_tir the importer emits for these; the
    elementwise form converts cleanly and computes the same values.
    """
    graph = model.graph
    new_nodes = []
    for index, node in enumerate(graph.node):
        tag = f"_decomposed{index}"
        if node.op_type == "Clip":
            current = node.input[0]
            for slot, op in ((1, "Max"), (2, "Min")):
                if slot < len(node.input) and node.input[slot]:
                    out = f"{node.output[0]}{tag}_{op}"
                    new_nodes += _clamp_node(op, current, node.input[slot], out)
                    current = out
            if node.attribute:  # opset < 11 keeps min/max as attributes
                attrs = {a.name: a.f for a in node.attribute}
                for key, op in (("min", "Max"), ("max", "Min")):
                    if key in attrs:
                        out = f"{node.output[0]}{tag}_{op}"
                        new_nodes += _clamp_node(op, current, _scalar(model, out + "_c", attrs[key]), out)
                        current = out
            new_nodes.append(helper.make_node("Identity", [current], [node.output[0]]))
        elif node.op_type in ("HardSigmoid", "HardSwish"):
            attrs = {a.name: a.f for a in node.attribute}
            alpha = attrs.get("alpha", 0.2 if node.op_type == "HardSigmoid" else 1.0 / 6.0)
            beta = attrs.get("beta", 0.5)
            x = node.input[0]
            base = f"{node.output[0]}{tag}"
            gate = node.output[0] if node.op_type == "HardSigmoid" else base + "_gate"
            new_nodes += [
                helper.make_node("Mul", [x, _scalar(model, base + "_alpha", alpha)], [base + "_ax"]),
                helper.make_node("Add", [base + "_ax", _scalar(model, base + "_beta", beta)], [base + "_axb"]),
                helper.make_node("Relu", [base + "_axb"], [base + "_lo"]),
                *_clamp_node("Min", base + "_lo", _scalar(model, base + "_one", 1.0), gate),
            ]
            if node.op_type == "HardSwish":
                new_nodes.append(helper.make_node("Mul", [x, gate], [node.output[0]]))
        else:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return model


def split_at_grid_sample(model: onnx.ModelProto):
    """Cut the model after its (single) GridSample: (rectifier, recogniser) or None.

    SVTR's STN/TPS rectifier is numerically fragile in fp16 (converted, it loses most of the
    argmax agreement), so the engine keeps it in fp32 and converts the rest.
    """
    samplers = [n for n in model.graph.node if n.op_type == "GridSample"]
    if not samplers:
        return None
    if len(samplers) > 1:
        raise ToolkitError(f"expected at most one GridSample, found {len(samplers)}")
    cut = samplers[0].output[0]
    inputs = [i.name for i in data_inputs(model)]
    outputs = [o.name for o in model.graph.output]
    extractor = onnx.utils.Extractor(model)
    rectifier = extractor.extract_model(inputs, [cut])
    recogniser = extractor.extract_model([cut], outputs)
    if any(i.name in inputs for i in recogniser.graph.input):
        raise ToolkitError("the network reads its input after the GridSample; cannot keep the rectifier apart")
    return rectifier, recogniser


# between the classifier and the graph output: bias, reshapes (3D <-> 2D Gemm) and softmax
_HEAD_TAIL_OPS = {"Add", "Reshape", "Softmax"}


def split_ctc_head(model: onnx.ModelProto):
    """Cut the model before its CTC head (the last MatMul/Gemm, bias, softmax): (body, head) or None.

    fp16 logits carry ~3 significant digits, so near-tied characters swap places in the
    argmax; the head is a small share of the FLOPs and stays fp32 in the fp16 engine.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {t.name for t in model.graph.initializer} | {
        n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    if len(model.graph.output) != 1:
        return None
    node = producers.get(model.graph.output[0].name)
    while node is not None and node.op_type in _HEAD_TAIL_OPS:
        dynamic = [i for i in node.input if i not in constants]
        if len(dynamic) != 1:
            return None
        node = producers.get(dynamic[0])
    if node is None or node.op_type not in ("MatMul", "Gemm") or node.input[0] in constants:
        return None
    cut = node.input[0]
    inputs = [i.name for i in data_inputs(model)]
    extractor = onnx.utils.Extractor(model)
    body = extractor.extract_model(inputs, [cut])
    head = extractor.extract_model([cut], [model.graph.output[0].name])
    return body, head


# ops that only move or select values: their outputs are exactly their (already rounded) inputs
_MOVE_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice", "Concat", "Flatten", "Shape", "Gather"}


EMULATED_ROUNDINGS = ("all", "weights", "activations", "products", "all_products")
# ops whose first two inputs are the operands of matrix products (the "products" roundings)
PRODUCT_OPS = {"Conv", "MatMul", "Gemm"}


REDUCED_STORAGE = ("fp16", "bf16")  # the reduced precisions a region's values can be rounded to


def round_to(values, precision: str):
    """``values`` (float32) rounded to fp16 or bf16 (round to nearest even), back in float32."""
    if precision == "fp16":
        return values.astype(np.float16).astype(np.float32)
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).astype(np.uint32)
    # NaN stays NaN (its payload may round into the exponent otherwise)
    return np.where(np.isnan(values), values, rounded.view(np.float32)).astype(np.float32)


def emulate_storage(model: onnx.ModelProto, region: set, rounding: str = "all",
                    precision: str = "fp16") -> onnx.ModelProto:
    """Round what the nodes producing ``region`` (output names) read and write to ``precision``
    (fp16 or bf16), in fp32.

    An onnxruntime reference for a reduced-precision engine: weights and activations of the
    region carry fp16 (bf16) values, arithmetic inside each op stays fp32 (as ToMixedPrecision's
    fp32 accumulation). It approximates the engine (TVM keeps some elementwise results fp32
    where this rounds every one) well enough to tell the rounding apart from compiler error:
    if onnxruntime with this rounding gains and loses the same share of samples, the rounding is
    the cause. ``rounding`` "weights" or "activations" rounds only the constants or only the
    computed tensors: which of the two moves the accuracy. "products" rounds only what the
    region's products by weights read (both operands of every Conv, MatMul and Gemm with a
    constant operand) and keeps every other value fp32: the arithmetic of bf16 matrix
    instructions (bf16 operands, fp32 sums), with the epilogues around them and the products of
    two activations (attention) in fp32. "all_products" rounds the operands of the products of
    two activations too (attention's scores and values: bf16 attention kernels).
    """
    from onnx import TensorProto

    if rounding not in EMULATED_ROUNDINGS:
        raise ToolkitError(f"rounding must be one of {', '.join(EMULATED_ROUNDINGS)}, got '{rounding}'")
    if precision not in REDUCED_STORAGE:
        raise ToolkitError(f"reduced storage must be one of {', '.join(REDUCED_STORAGE)}, got '{precision}'")
    weights, activations = rounding in ("all", "weights"), rounding in ("all", "activations")
    reduced = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.BFLOAT16

    out = onnx.ModelProto()
    out.CopyFrom(model)
    opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), None)
    if precision == "bf16" and opset is not None and opset < 13:
        # Cast to and from bfloat16 exists from opset 13 (PP-OCRv4's recogniser is opset 12):
        # the graph is converted first, op by op, with the same semantics
        out = onnx.version_converter.convert_version(out, 13)
    inferred = onnx.shape_inference.infer_shapes(out)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    values = _constant_values(out)
    # names, before the loop below renames outputs: a tensor the region itself produces is
    # rounded where it is made and must not be rounded again where it is read
    made_in_region = {o for n in out.graph.node if n.op_type != "Constant" and set(n.output) & region for o in n.output}

    def round_trip(name, new_name):
        return [helper.make_node("Cast", [name], [f"{new_name}__{precision}"], to=reduced),
                helper.make_node("Cast", [f"{new_name}__{precision}"], [new_name], to=TensorProto.FLOAT)]

    renamed, nodes = {}, []

    def rounded_input(name):
        """``name`` rounded once: a rounded copy of a constant, or a round trip of a tensor."""
        if name not in renamed:
            renamed[name] = f"{name}__as_{precision}"
            if name in values:
                out.graph.initializer.append(numpy_helper.from_array(round_to(values[name], precision),
                                                                     renamed[name]))
            else:
                nodes.extend(round_trip(name, renamed[name]))
        return renamed[name]

    for node in out.graph.node:
        if node.op_type == "Constant" or not set(node.output) & region:
            nodes.append(node)
            continue
        if rounding in ("products", "all_products"):
            by_weight = any(name in values for name in node.input[:2])
            if node.op_type in PRODUCT_OPS and (by_weight or rounding == "all_products"):
                for k, name in enumerate(node.input[:2]):
                    constant = name in values and values[name].dtype == np.float32 and values[name].size > 0
                    if constant or (name not in values and types.get(name) == TensorProto.FLOAT):
                        node.input[k] = rounded_input(name)
            nodes.append(node)
            continue
        for k, name in enumerate(node.input):
            outside = name not in values and name not in made_in_region
            if name in values and values[name].dtype == np.float32 and values[name].size > 0:
                if not weights:
                    continue
                if name not in renamed:
                    renamed[name] = f"{name}__as_{precision}"
                    out.graph.initializer.append(numpy_helper.from_array(round_to(values[name], precision),
                                                                         renamed[name]))
                node.input[k] = renamed[name]
            elif activations and outside and name and types.get(name) == TensorProto.FLOAT:
                if name not in renamed:  # an fp32 tensor entering the region: cast once
                    renamed[name] = f"{name}__as_{precision}"
                    nodes += round_trip(name, renamed[name])
                node.input[k] = renamed[name]
        nodes.append(node)
        if node.op_type in _MOVE_OPS or not activations:
            continue
        for k, name in enumerate(node.output):
            if types.get(name) == TensorProto.FLOAT:
                node.output[k] = name + "__fp32"
                nodes += round_trip(node.output[k], name)
    used = {i for n in nodes for i in n.input} | {o.name for o in out.graph.output}
    nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in used]
    kept = [i for i in out.graph.initializer if i.name in used]
    del out.graph.node[:], out.graph.initializer[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(kept)
    return out


def load_onnx(path: str):
    if not os.path.isfile(path):
        raise ToolkitError(f"ONNX model not found: {path}")
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ToolkitError(f"cannot read ONNX model {path}: {exc.__class__.__name__}")


def prepare_onnx(model, input_name: str, shape: tuple):
    """The graph the importer gets: static shape, fixed Resize inputs, elementwise clamps."""
    model = static_input(model, input_name, shape)
    model = drop_empty_resize_inputs(model)
    return decompose_clamps(model)
