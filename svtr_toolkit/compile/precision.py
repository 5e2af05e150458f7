"""The precision plan: which parts of the graph a reduced-precision engine converts, and the
Relax module.

fp16 and bf16 keep two parts fp32: the STN/TPS rectifier, since converting the whole graph
loses the argmax, and the CTC head, whose reduced logits swap near-tied characters. The
recogniser between them holds fp16 (bf16) values, computed one of two ways (``reduced_mode``):

- ``mixed`` (fp16): Relax's ToMixedPrecision (fp16 arithmetic, fp32 accumulation in matmuls
  and convolutions), for devices with fp16 arithmetic (GPUs); on CPUs with it the
  recogniser's matmuls then accumulate in fp16 with an fp32 sum every K-chunk
  (``fp16_accumulate``).
- ``storage``: every weight and every activation the recogniser produces is rounded to fp16
  (bf16), as a mixed engine holds them, and the arithmetic is fp32: without fp16 arithmetic
  LLVM would widen and narrow around every fp16 operation of the mixed module (matmul
  operands, GELU's polynomial), which makes it slower than the fp32 engine; this one computes
  what the fp32 engine computes, plus the rounding casts, which fuse into the kernels'
  epilogues. bf16 engines always take this form: their matrix products get bf16 arithmetic in
  the kernels where the CPU has it (``relax_passes.bf16_products``), everything else stays fp32
  on bf16 values.
"""
from __future__ import annotations

import warnings

from ..errors import ToolkitError, last_line, pending_interrupt
from .onnx_passes import emulate_storage, prepare_onnx, split_at_grid_sample, split_ctc_head
from .relax_passes import softmax_in_place

REDUCED = ("fp16", "bf16")
MODES = ("mixed", "storage")


def _import(model, input_name, shape):
    from tvm.relax.frontend.onnx import from_onnx

    try:
        with warnings.catch_warnings():
            # paddle2onnx's tensor names have dots; the importer renames them and warns each time
            warnings.filterwarnings("ignore", message="Renaming name")
            imported = from_onnx(model, shape_dict={input_name: list(shape)})
    except Exception as exc:  # the importer raises assorted errors for unsupported graphs
        if pending_interrupt() is not None:
            raise pending_interrupt() from None
        raise ToolkitError(f"TVM cannot import the model: {last_line(exc)}")
    return softmax_in_place()(imported)


def reduced_plan(model):
    """A reduced-precision engine's parts, in order: [(name, ONNX part, reduced?)].

    The STN/TPS rectifier up to the GridSample (if the model has one) stays fp32: converting
    it loses the argmax. The CTC head (classifier, bias, softmax) stays fp32: reduced logits
    swap near-tied characters. The recogniser between them is reduced.
    """
    parts, rest = [], model
    cut = split_at_grid_sample(rest)
    if cut is not None:
        parts.append(("rectifier", cut[0], False))
        rest = cut[1]
    cut = split_ctc_head(rest)
    parts += [("recogniser", cut[0], True), ("head", cut[1], False)] if cut else [("recogniser", rest, True)]
    return parts


def reduced_mode(precision: str, spec: dict | None, accumulate: dict | None) -> str:
    """How a ``precision`` engine for target ``spec`` computes its reduced parts: ``storage``
    (``ROUNDING``: the products' operands rounded, their products in the precision's arithmetic
    where the CPU has it) on LLVM CPU targets and for bf16; fp16 ``mixed`` (ToMixedPrecision)
    on devices that compute in fp16 (GPUs)."""
    if precision == "bf16" or (spec or {}).get("kind") == "llvm":
        return "storage"
    return "mixed"


# What a reduced precision rounds on CPUs (``onnx_passes.emulate_storage``): the operands of
# the recogniser's matrix products, as fp16/bf16 matrix arithmetic reads them; sums and
# epilogues stay fp32. bf16 rounds attention's products of two activations too (its kernel
# computes them with bf16 dot products where the CPU has them); fp16 keeps those fp32 (no fp16
# attention kernel: rounding them would only add conversions).
ROUNDING = {"fp16": "products", "bf16": "all_products"}
HELD = {"products": "the operands of its products by weights rounded to {}",
        "all_products": "the operands of its matrix products (attention's too) rounded to {}"}


def round_reduced_parts(prepared, precision: str = "fp16", rounding: str | None = None):
    """``prepared`` (an ONNX model already through ``prepare_onnx``) with ``reduced_plan``'s
    reduced parts rounded to ``precision`` in fp32 arithmetic (``emulate_storage``; ``rounding``
    defaults to the precision's ``ROUNDING``); returns (model, a line naming the parts)."""
    rounding = ROUNDING[precision] if rounding is None else rounding
    parts = reduced_plan(prepared)
    region = {o for _, part, reduced in parts if reduced for n in part.graph.node for o in n.output}
    plan = ", ".join(f"{name} {precision if reduced else 'fp32'}" for name, _, reduced in parts)
    return emulate_storage(prepared, region, rounding, precision), plan


def emulate_plan(model, input_name: str, shape: tuple, precision: str = "fp16", rounding: str | None = None):
    """The prepared model with ``reduced_plan``'s reduced parts rounded as the engine rounds
    them (or only their weights / activations, see ``emulate_storage``), for onnxruntime: the
    reference that separates the rounding from compiler error.
    Returns (model, a line naming the parts)."""
    return round_reduced_parts(prepare_onnx(model, input_name, shape), precision, rounding)


def to_relax(model, input_name: str, shape: tuple, precision: str, accumulate: dict | None = None,
             mode: str = "mixed", fast_math: bool = True):
    """Relax IRModule for the prepared ONNX model, and a line describing the precision plan.

    fp16, ``mode`` "mixed": the parts ``reduced_plan`` marks are converted with
    ToMixedPrecision (fp32 accumulation), each part its own function in the module; "storage"
    (and always for bf16): those parts' weights and activations are rounded to the precision and
    computed in fp32 (``reduced_mode``). exp/erf/tanh/sigmoid become TVM's fast (polynomial)
    forms (``relax_passes.fast_math``), unless ``fast_math`` is False: a target that converts
    the layout first applies them after that (the LLVM target's ``lowering_passes``).
    ``accumulate`` (``fp16_accumulate.setting``'s value, for fp16): the fp16 parts' matmuls
    accumulate in fp16 with an fp32 sum every ``accumulate["chunk"]`` terms.
    """
    if mode not in MODES:
        raise ValueError(f"reduced-precision mode must be one of {MODES}, got {mode!r}")
    storage = precision in REDUCED and (mode == "storage" or precision == "bf16")
    if storage:
        rounded, parts = round_reduced_parts(model, precision)
        held = f"{HELD[ROUNDING[precision]].format(precision)}, everything else fp32"
        mod, plan, chained = _import(rounded, input_name, shape), parts.replace(precision, f"{precision} ({held})"), False
    else:
        mod, plan, chained = _to_relax(model, input_name, shape, precision)
    if fast_math:
        mod = _fast_math(mod, skip="main" if chained else None)
    if precision != "fp16" or not accumulate:
        return mod, plan
    from .fp16_accumulate import describe

    if storage:
        from .relax_passes import CHUNK_ATTR

        return mod.with_attr(CHUNK_ATTR, accumulate["chunk"]), f"{plan}; {describe(accumulate)}"
    from .fp16_accumulate import rewrite_matmuls

    mod, count = rewrite_matmuls(mod, accumulate["chunk"])
    return mod, f"{plan}; {describe(accumulate)}, {count} matmuls"


def _to_relax(model, input_name: str, shape: tuple, precision: str):
    """(module, plan in words, whether ``main`` chains part functions) without fast math:
    fp32, or fp16 "mixed" (ToMixedPrecision, of the whole model or of its fp16 parts)."""
    import tvm
    from tvm import relax

    if precision == "fp32":
        return _import(model, input_name, shape), "all fp32", False
    parts = reduced_plan(model)
    if len(parts) == 1:
        mixed = relax.transform.ToMixedPrecision(out_dtype="float32")
        return mixed(_import(model, input_name, shape)), "fp16 compute, fp32 accumulate/IO", False
    functions, part_shape, described = [], list(shape), []
    for name, part, fp16 in parts:
        part_input = input_name if not functions else part.graph.input[0].name
        func = _import(part, part_input, part_shape)["main"]
        if fp16:
            func = relax.transform.ToMixedPrecision(out_dtype="float32")(tvm.IRModule({"main": func}))["main"]
        functions.append((name, func))
        part_shape = [int(d) for d in func.ret_ty.shape]
        described.append(f"{name} {'fp16' if fp16 else 'fp32'} ({len(part.graph.node)} nodes)")
    return _chain(functions, input_name, shape), ", ".join(described), True


def _fast_math(mod, skip=None):
    """``relax_passes.fast_math`` on every function but ``skip`` (the pass cannot visit calls
    to other functions, which the chaining ``main`` consists of)."""
    import tvm

    from .relax_passes import fast_math

    kept = {gv: func for gv, func in mod.functions_items() if gv.name_hint != skip}
    converted = fast_math()(tvm.IRModule(kept))
    for gv, func in mod.functions_items():
        if gv.name_hint == skip:
            converted[gv] = func
    return converted


def _chain(functions, input_name, shape):
    """main(x) = fn(...f2(f1(x))) in one module, each (name, function) kept as its own function."""
    from tvm import relax

    bb = relax.BlockBuilder()
    handles = [bb.add_func(func.without_attr("global_symbol"), name) for name, func in functions]
    x = relax.Var(input_name, relax.TensorType(shape, "float32"))
    with bb.function("main", [x], {"num_input": 1}):
        value = x
        for handle in handles:
            value = bb.emit(relax.Call(handle, [value]))
        bb.emit_func_output(value)
    return bb.get()
