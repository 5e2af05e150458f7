"""Relax graph rewrites applied when building engines."""
from __future__ import annotations

from typing import NamedTuple


def _call_rewrite_pass(pattern, rewriter, name: str):
    """A module pass applying ``rewriter`` to every call matching ``pattern`` in every Relax function."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import rewrite_call

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        rewritten = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewritten[gv] = rewrite_call(pattern, rewriter, func)
        return rewritten

    return _pass


def _kernel_rewrite_pass(patterns, rewriter, name: str, bindings: bool = False):
    """As ``_call_rewrite_pass``, for rewrites that add kernels: ``rewriter(call, matches,
    builder)`` may ``builder.add_func`` a PrimFunc and call it; every pattern is applied in turn.
    With ``bindings``, ``rewriter(call, matches, builder, bound)`` also gets {var: its value}
    of the function, to look through variables past what the pattern matched."""
    import tvm
    from tvm import relax
    from tvm.relax.analysis import get_var2val
    from tvm.relax.dpl import rewrite_call

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        builder = relax.BlockBuilder(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                for pattern in patterns:
                    extra = (get_var2val(func),) if bindings else ()
                    func = rewrite_call(pattern, lambda call, matches: rewriter(call, matches, builder, *extra), func)
                builder.update_func(gv, func)
        return builder.get()

    return _pass


def _out_dtype(attrs) -> str | None:
    """An op's ``out_dtype`` attribute, None where it is unset (the op's input dtype)."""
    out_dtype = str(attrs.out_dtype)
    return None if out_dtype in ("", "None", "void") else out_dtype


def _scalar_const(expr):
    """``expr`` as a rank-0 constant when it is a constant of one element, else None."""
    import numpy as np
    from tvm import ir, relax

    if not isinstance(expr, ir.expr.Constant):
        return None
    value = expr.value.numpy()
    return relax.const(value.reshape(()), str(value.dtype)) if value.size == 1 else None


def _known_shape(expr) -> list[int] | None:
    """``expr``'s shape as numbers; None where a dimension is symbolic or the shape unknown."""
    try:
        return [int(d) for d in expr.ty.shape]
    except (TypeError, ValueError, AttributeError):
        return None


_ELEMENTWISE_BINARY = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.less",
                       "relax.greater", "relax.maximum", "relax.minimum", "relax.power")


def canonical_elementwise():
    """Elementwise ops in the forms layout conversion can move through: constants of one
    element (ONNX's [1]-shaped scales and shifts) become scalars, and ``where(x < c, c, x)``
    / ``where(x > c, c, x)`` with a scalar c (the ONNX clamps ``onnx_passes.decompose_clamps``
    writes as selects) become ``maximum(x, c)`` / ``minimum(x, c)``: the same values.

    Why: ``ConvertLayout`` infers a layout for a binary op only when the other operand is a
    scalar or of the same rank, and has no rule for ``where``; at either it would send the
    activations back to NCHW, two transposes around every convolution.
    """
    import tvm
    from tvm import ir, relax

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call):
            call = self.visit_expr_post_order(call)
            if not isinstance(call.op, ir.Op):
                return call
            name = call.op.name
            if name in _ELEMENTWISE_BINARY:
                args = [a if _scalar_const(a) is None else _scalar_const(a) for a in call.args]
                if any(not new.same_as(old) for new, old in zip(args, call.args)):
                    return relax.Call(call.op, args, call.attrs)
            elif name == "relax.where":
                clamp = self._clamp(call)
                return call if clamp is None else clamp
            return call

        def _clamp(self, call):
            test, chosen, other = call.args
            test = self.lookup_binding(test) if isinstance(test, relax.Var) else test
            if not (isinstance(test, relax.Call) and isinstance(test.op, ir.Op)
                    and test.op.name in ("relax.less", "relax.greater")):
                return None
            x, bound = test.args
            bound, chosen = _scalar_const(bound), _scalar_const(chosen)
            if bound is None or chosen is None or not other.same_as(x) \
                    or float(bound.value.numpy()) != float(chosen.value.numpy()):
                return None
            clamp = relax.op.maximum if test.op.name == "relax.less" else relax.op.minimum
            return clamp(x, bound)

    @tvm.transform.module_pass(opt_level=0, name="CanonicalElementwise")
    def _pass(mod, _ctx):
        rewriter = Rewriter(mod)
        updated = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                updated[gv] = rewriter.visit_expr(func)
        return relax.transform.DeadCodeElimination()(updated)

    return _pass


def fast_math():
    """exp, erf, tanh and sigmoid (``sigmoid_as_exp``) as TVM's fast polynomial forms
    (FastMathTransform), which LLVM vectorises: otherwise each element is a scalar libm call,
    and GELU, swish and softmax then take a large share of a CPU engine's time. The fast forms
    are kernels of their own (``call_tir``), which ``ConvertLayout`` cannot look into: on a
    channels-last network run it after ``network_to_nhwc``, or every one of them gets a
    transpose back to NCHW on each side."""
    import tvm
    from tvm import relax

    return tvm.transform.Sequential([sigmoid_as_exp(), relax.transform.FastMathTransform(), divisions_by_constants()],
                                    name="FastMath")


def constant_chains():
    """``(x + a) + b`` as ``x + (a + b)`` and ``(x * a) * b`` as ``x * (a * b)`` for float
    constants a and b (either operand order) where nothing else reads ``x + a`` (``x * a``):
    one operation where there were two, the constant computed once here, in float64 and
    rounded once; the result within a rounding or two of the chain's (a reassociation, as C
    compilers' -fassociative-math). Where the inner result has other readers the chain is
    left alone: folding it would keep both operations and add a second constant vector.

    Why: PP-OCRv4 ends every convolution with its bias, the learnable affine block's shift and
    hardswish's ``/ 6`` times the next affine scale: two of the ten elementwise operations of
    each epilogue, which in its 16- to 64-channel products cost as much as the products' own
    inner loop (docs give the measured effect). Run after ``divisions_by_constants`` and a
    constant folding (a bias is a reshaped constant until then).
    """
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.analysis import free_vars, get_var2val
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    def folding(op, combine, build):
        x, inner_const, outer_const = wildcard(), is_const(), is_const()
        inner = is_op(op)(x, inner_const) | is_op(op)(inner_const, x)
        pattern = is_op(op)(inner, outer_const) | is_op(op)(outer_const, inner)

        def rewriter(call, matches, single_use):
            a, b = (matches[c].value.numpy() for c in (inner_const, outer_const))
            dtype = str(matches[x].ty.dtype)
            if not single_use(matches[inner]) or a.dtype.kind != "f" or str(a.dtype) != dtype \
                    or str(b.dtype) != dtype:
                return call
            folded = combine(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)
            if not np.all(np.isfinite(folded)):
                return call
            return build(matches[x], relax.const(folded, dtype))

        return pattern, rewriter

    rules = [folding("relax.add", np.add, relax.op.add), folding("relax.multiply", np.multiply, relax.op.multiply)]

    @tvm.transform.module_pass(opt_level=0, name="ConstantChains")
    def _pass(mod, _ctx):
        rewritten = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gv, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            for pattern, rewriter in rules:
                bound = get_var2val(func)
                uses = {}
                for value in [*bound.values(), func.body.body]:
                    for var in free_vars(value):
                        uses[var] = uses.get(var, 0) + 1
                var_of = {value: var for var, value in bound.items()}

                def single_use(value):
                    var = var_of.get(value)
                    return var is not None and uses.get(var, 0) == 1

                func = rewrite_call(pattern, lambda call, matches: rewriter(call, matches, single_use), func)
            rewritten[gv] = func
        return rewritten

    return _pass


def divisions_by_constants():
    """``x / c`` for a constant float c (finite, nonzero) as ``x * (1 / c)``: within one
    rounding of the quotient (exact where c is a power of two), as onnxruntime computes
    HardSwish's and HardSigmoid's 1/6 and C compilers with -freciprocal-math.

    Why: LLVM must keep a division by 6 (or by sqrt(2) in GELU) a division, and a vector
    division costs several FMAs (docs give the measured effect: small).
    """
    import numpy as np
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    value, divisor = wildcard(), is_const()

    def rewriter(call, matches):
        c = matches[divisor].value.numpy()
        if c.dtype.kind != "f" or not np.all(np.isfinite(c)) or np.any(c == 0) \
                or str(matches[value].ty.dtype) != str(c.dtype):
            return call
        with np.errstate(over="ignore"):  # an inverse past the dtype's range: left a division
            inverse = (1.0 / c.astype(np.float64)).astype(c.dtype)
        if not np.all(np.isfinite(inverse)):
            return call
        return relax.op.multiply(matches[value], relax.const(inverse, str(c.dtype)))

    return _call_rewrite_pass(is_op("relax.divide")(value, divisor), rewriter, "DivisionsByConstants")


def sigmoid_as_exp():
    """``sigmoid(x)`` as ``1 / (1 + exp(-x))``, the same function, so that FastMathTransform
    (which has no rule for sigmoid) turns its exponential into TVM's polynomial ``fast_exp``
    (``fast_math``).

    Why: LLVM has no vector exponential, so TVM's sigmoid is a scalar ``expf`` call per
    element: PP-OCRv4's swish activations (the neck, the squeeze-excitation) ran at a third to
    a half of the speed of the products they follow (docs give the measured effect).
    """
    from tvm import relax
    from tvm.relax.dpl import is_op, wildcard

    value = wildcard()

    def rewriter(call, matches):
        x = matches[value]
        one = relax.const(1.0, str(x.ty.dtype))
        return relax.op.divide(one, relax.op.add(one, relax.op.exp(relax.op.negative(x))))

    return _call_rewrite_pass(is_op("relax.sigmoid")(value), rewriter, "SigmoidAsExp")


def bf16_rounding():
    """``astype(astype(x, bfloat16), float32)`` (the bf16 storage plan's rounding of a value)
    as an explicit round-to-nearest-even on x's bits.

    Why: TVM legalises bfloat16 by computing in fp32 and rounding only where a bf16 value is
    stored to memory; a round trip fused into a kernel is never stored, so the rounding
    vanished and the engine computed fp32 values (measured: the bf16 rounding of a fused
    matmul's output was not applied at all).
    """
    from tvm import relax
    from tvm.relax.dpl import is_op, wildcard

    value = wildcard()
    narrow = is_op("relax.astype")(value)
    pattern = is_op("relax.astype")(narrow)

    def rewriter(call, matches, builder):
        inner = matches[narrow]
        if str(inner.attrs.dtype) != "bfloat16" or str(call.attrs.dtype) != "float32" \
                or str(matches[value].ty.dtype) != "float32":
            return call
        kernel = builder.add_func(_round_bf16_kernel(matches[value].ty), "round_bf16")
        return relax.call_tir(kernel, [matches[value]], matches[value].ty)

    return _kernel_rewrite_pass([pattern], rewriter, "Bf16Rounding")


def _round_bf16_kernel(ty):
    """A PrimFunc rounding a float32 tensor of type ``ty`` to bf16 values. Its input is read
    once (a Let): chains of these are inlined into each other, and an expression naming its
    input three times would grow threefold with every link. (A NaN keeps its top mantissa
    bits; the quiet NaNs arithmetic produces stay NaN.)"""
    from tvm import te, tirx

    x = te.placeholder(_int64([int(d) for d in ty.shape]), "float32", "x")

    def rounded(*index):
        bits = tirx.Var("bits", "uint32")
        even = (bits >> tirx.const(16, "uint32")) & tirx.const(1, "uint32")
        kept = (bits + tirx.const(0x7FFF, "uint32") + even) & tirx.const(0xFFFF0000, "uint32")
        return tirx.Let(bits, tirx.reinterpret("uint32", x[index]), tirx.reinterpret("float32", kept))

    out = te.compute(x.shape, rounded, name="round_bf16")
    return te.create_prim_func([x, out]).without_attr("global_symbol")


def softmax_in_place():
    """``reshape(softmax(reshape(x, [rows, C])), shape(x))`` with the softmax over C, the last
    axis of ``x``, becomes ``softmax(x)`` over its last axis: the same values.

    Why: ONNX before opset 13 defines Softmax on the input flattened to 2-D, and the importer
    writes those reshapes; the one that gives the network's output back its shape cannot be a
    view there and copies the whole output (PP-OCRv4's [N, 40, 6625] probabilities: 34 MB, 1.5 ms
    at batch 32).
    """
    from tvm import relax
    from tvm.relax.dpl import is_op, wildcard

    x = wildcard()
    flat = is_op("relax.reshape")(x, wildcard())
    softmax = is_op("relax.nn.softmax")(flat)
    pattern = is_op("relax.reshape")(softmax, wildcard())

    def rewriter(call, matches):
        shape, flat_shape, out_shape = (_known_shape(e) for e in (matches[x], matches[flat], call))
        if None in (shape, flat_shape, out_shape):
            return call
        axis = int(matches[softmax].attrs.axis)
        if out_shape != shape or not flat_shape or flat_shape[-1] != shape[-1] or axis not in (-1, len(flat_shape) - 1):
            return call
        return relax.op.nn.softmax(matches[x], axis=-1)

    return _call_rewrite_pass(pattern, rewriter, "SoftmaxInPlace")


def network_to_nhwc():
    """Every 2-D convolution in NHWC with HWIO weights, and the layout carried through the
    ops between them (``ConvertLayout``), so the network runs channels-last from its first
    convolution to where its shape changes: one transpose in, one out, instead of two per
    convolution.

    Why: channels-last is the layout in which all three kinds of convolution are contiguous
    in the axis a schedule vectorises: a pointwise convolution is a matrix product over the
    channels ([N*H*W, Ci] x [Ci, Co]), a KxK one a sum of such products, a depthwise one an
    elementwise multiply-add along the channels; in NCHW the vectors run along an image row
    (80 or 160 wide in PP-OCRv4), the weights are read as scalars, and the depthwise windows
    walk strided memory. Run ``canonical_elementwise`` first.
    """
    from tvm import relax

    return relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})


def dead_window_taps():
    """2-D convolutions whose window has rows or columns that read only zero padding, at every
    output position, lose them: the weight is sliced to the taps that read the map and the
    padding shrinks by what was dropped, so the output shape and every sum's terms are the
    same (the dropped terms were products with zeros).

    Why: a KxK window over a map smaller than itself (SVTR's rectifier ends with a 3x3
    convolution over a 1x2 map) spends most of its multiply-adds on padding: there, two of the
    three window rows. A window cut to 1x1, stride 1, then goes on as a pointwise product
    (``pointwise_convs_as_matmuls``).
    """
    from tvm import relax
    from tvm.relax.dpl import is_op, wildcard

    data, weight = wildcard(), wildcard()
    pattern = is_op("relax.nn.conv2d")(data, weight)

    def live_taps(size, out_size, taps, stride, dilation, before):
        """The first and last window tap along one axis whose reads reach inside the map
        (None when none does: a window that strides past a map smaller than its stride)."""
        live = [t for t in range(taps)
                if t * dilation - before < size and (out_size - 1) * stride + t * dilation - before >= 0]
        return (live[0], live[-1]) if live else None

    def rewriter(call, matches):
        attrs = call.attrs
        x_shape, w_shape, out_shape = (_known_shape(e) for e in (matches[data], matches[weight], call))
        if None in (x_shape, w_shape, out_shape) or len(x_shape) != 4:
            return call
        in_axes = [str(attrs.data_layout).index(a) for a in "HW"]
        w_axes = [str(attrs.kernel_layout).index(a) for a in "HW"]
        out_axes = [str(attrs.out_layout or attrs.data_layout).index(a) for a in "HW"]
        padding = [int(p) for p in attrs.padding]
        begin, end, new_padding = [], [], list(padding)
        for n, (ia, wa, oa) in enumerate(zip(in_axes, w_axes, out_axes)):
            stride, dilation = int(attrs.strides[n]), int(attrs.dilation[n])
            taps = live_taps(x_shape[ia], out_shape[oa], w_shape[wa], stride, dilation, padding[n])
            if taps is None:
                return call
            first, last = taps
            new_padding[n] = padding[n] - first * dilation
            new_padding[n + 2] = padding[n + 2] - (w_shape[wa] - 1 - last) * dilation
            begin.append(first)
            end.append(last + 1)
        if new_padding == padding or min(new_padding) < 0:
            return call  # nothing dead, or a cut that padding cannot express
        w = relax.op.strided_slice(matches[weight], w_axes, begin, end)
        return relax.op.nn.conv2d(matches[data], w, attrs.strides, new_padding, attrs.dilation, int(attrs.groups),
                                  attrs.data_layout, attrs.kernel_layout, attrs.out_layout, _out_dtype(attrs))

    return _call_rewrite_pass(pattern, rewriter, "DeadWindowTaps")


def pointwise_convs_as_matmuls():
    """NHWC/HWIO convolutions with a 1x1 window, stride 1, no padding and one group become
    ``matmul(x, w[Ci, Co])``: the same sum over the input channels, which
    ``pack_weights`` then lays out in register-tile panels like any weight matmul. Over a
    one-pixel map the images become the product's rows (``x`` read as [N, Ci])."""
    from tvm import relax
    from tvm.relax.dpl import is_op, wildcard

    data, weight = wildcard(), wildcard()
    pattern = is_op("relax.nn.conv2d")(data, weight)

    def rewriter(call, matches):
        attrs = call.attrs
        w_shape = _known_shape(matches[weight])
        if w_shape is None or len(w_shape) != 4:
            return call
        kh, kw, cin, cout = w_shape
        if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NHWC", "HWIO", "NHWC") \
                or int(attrs.groups) != 1 or (kh, kw) != (1, 1) \
                or any(int(s) != 1 for s in attrs.strides) or any(int(p) != 0 for p in attrs.padding):
            return call
        x, w = matches[data], relax.op.reshape(matches[weight], [cin, cout])
        x_shape = _known_shape(x)
        if x_shape is not None and len(x_shape) == 4 and x_shape[1:3] == [1, 1]:
            # A map of one pixel per image (a squeeze-excitation's): as [N, 1, 1, C] the matmul
            # has one row per image and no register tile fits; as [N, C] the images are its rows.
            n = x_shape[0]
            product = relax.op.matmul(relax.op.reshape(x, [n, cin]), w, out_dtype=_out_dtype(attrs))
            return relax.op.reshape(product, [n, 1, 1, cout])
        return relax.op.matmul(x, w, out_dtype=_out_dtype(attrs))

    return _call_rewrite_pass(pattern, rewriter, "PointwiseConvsAsMatmuls")


def fused_layer_norm():
    """Layer normalisation as exported op by op, ``(x - mean(x)) / sqrt(mean((x - mean(x))^2) +
    eps)`` over the last axis, becomes one kernel (scheduled by the row-reduction rule): the
    same operations (the sums' order is the rule's), each row read from cache instead of the
    three kernels and two intermediate tensors FuseOps made of it.

    Why: SVTR normalises 25 times per image and PP-OCRv4's neck 5; as three kernels each (the
    square a kernel of its own) they were a quarter of SVTR's kernel launches and a tenth of
    its time outside the products (docs give the measured effect).
    """
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    x, exponent, eps = wildcard(), is_const(), is_const()
    mean = is_op("relax.mean")(x)
    centred = is_op("relax.subtract")(x, mean)
    variance = is_op("relax.mean")(is_op("relax.power")(centred, exponent))
    pattern = is_op("relax.divide")(centred, is_op("relax.sqrt")(is_op("relax.add")(variance, eps)))

    def over_last_axis(call, rank) -> bool:
        axes = call.attrs.axis
        return bool(call.attrs.keepdims) and axes is not None and [int(a) % rank for a in axes] == [rank - 1]

    def rewriter(call, matches, builder):
        shape = _known_shape(matches[x])
        power, epsilon = _scalar_const(matches[exponent]), _scalar_const(matches[eps])
        if not shape or str(matches[x].ty.dtype) != "float32" or power is None or epsilon is None \
                or float(power.value.numpy()) != 2.0 \
                or not all(over_last_axis(matches[m], len(shape)) for m in (mean, variance)):
            return call
        kernel = builder.add_func(_layer_norm_kernel(shape, float(epsilon.value.numpy())), "layer_norm")
        return relax.call_tir(kernel, [matches[x]], relax.TensorType(shape, "float32"))

    return _kernel_rewrite_pass([pattern], rewriter, "FusedLayerNorm")


def _layer_norm_kernel(shape, eps: float):
    """The TE of ``fused_layer_norm``: TVM's mean is a sum divided by the count, and x^2 is
    x * x (LLVM makes ``pow(x, 2.0)`` that very product); the division by the deviation a
    multiplication by its inverse, computed once per row."""
    from tvm import te, tirx

    x = te.placeholder(_int64(shape), "float32", "x")
    count = tirx.const(float(shape[-1]), "float32")
    k = te.reduce_axis(tuple(_int64((0, shape[-1]))), "k")
    total = te.compute(_int64(shape[:-1]), lambda *i: te.sum(x[(*i, k)], axis=k), name="layer_norm_sum")
    mean = te.compute(total.shape, lambda *i: total[i] / count, name="layer_norm_mean")
    k = te.reduce_axis(tuple(_int64((0, shape[-1]))), "k")
    squares = te.compute(total.shape, lambda *i: te.sum((x[(*i, k)] - mean[i]) * (x[(*i, k)] - mean[i]), axis=k),
                         name="layer_norm_squares")
    # one division per row: the elements are multiplied by the inverse deviation (within one
    # rounding of the quotient), as divisions_by_constants does for a constant divisor
    scale = te.compute(total.shape, lambda *i: tirx.const(1.0, "float32")
                       / te.sqrt(squares[i] / count + tirx.const(eps, "float32")), name="layer_norm_scale")
    out = te.compute(x.shape, lambda *i: (x[i] - mean[i[:-1]]) * scale[i[:-1]], name="layer_norm")
    return te.create_prim_func([x, out]).without_attr("global_symbol")


def fused_attention(target):
    """``matmul(softmax(matmul(q, permute_dims(k)) [+ mask]), v)`` with the softmax over the keys
    (the last axis) becomes one kernel (``schedule_rules.attention``). q, k and v are read where
    they lie: through the reshapes, transposes, slices and squeezes that cut them out of one
    qkv product (``_view``), q with its scalar scale; the mask, a constant [queries, keys], is
    transposed at build time. When a transpose of the heads and the tokens follows (the
    heads' outputs concatenated per token), the kernel writes that layout itself.

    Why: SVTR's attention products have 32-term reductions against 50- to 200-wide rows, and the
    softmax between them reads and writes the whole score tensor; split, the three kernels ran at
    a third to a half of the packed matmuls' speed, and the copies of q, k, v and of the output
    around them were kernels of their own (docs give the measured effect). CPU targets only:
    the kernel uses TVM's fast_exp, as the fast softmax it replaces.

    A bf16 engine's plan rounds the four operands of the two products to bf16 (q, k, the
    softmax's output and v, each ``astype(astype(x, bfloat16), float32)``): the kernel reads
    through those roundings and applies them itself, rounding the unnormalised exponentials
    (the division by their sum comes after the product, as in the fp32 kernel). On CPUs with
    AVX-512 BF16 both products are bf16 dot products (``schedule_rules.attention_bf16``);
    elsewhere the fp32 kernel computes the rounded values.
    """
    import numpy as np
    from tvm import relax, s_tir
    from tvm.relax.dpl import is_const, is_op, is_tuple, wildcard

    from .arithmetic import has_bf16_dot_products, target_spec
    from .schedule_rules.attention import query_block
    from .schedule_rules.common import CpuModel

    def maybe_rounded(pattern):
        return pattern | is_op("relax.astype")(is_op("relax.astype")(pattern))

    q, k, v, mask = wildcard(), wildcard(), wildcard(), is_const()
    keys_t = is_op("relax.permute_dims")(k)
    scores = is_op("relax.matmul")(q, maybe_rounded(keys_t))
    softmaxes = [is_op("relax.call_tir")(wildcard(), is_tuple([is_op("relax.add")(scores, mask)])),
                 is_op("relax.call_tir")(wildcard(), is_tuple([scores]))]
    products = [is_op("relax.matmul")(maybe_rounded(softmax), v) for softmax in softmaxes]
    patterns = [is_op("relax.permute_dims")(product) for product in products] + products
    queries_per_task = query_block(CpuModel.of(target))
    bf16_dots = has_bf16_dot_products(target_spec(target))

    def softmax_over_last_axis(call, builder) -> bool:
        """Is ``call`` a call to TVM's fast softmax over its input's last axis?"""
        func = builder.get()[call.args[0]]
        try:
            sch = s_tir.Schedule(func)
            axis = int(sch.get(sch.get_sblock("T_softmax_norm")).annotations["axis"])
        except Exception:  # not a softmax kernel (any other call_tir): nothing to fuse
            return False
        return axis == len(call.ty.shape) - 1

    def rewriter(call, matches, builder, bound):
        product = next(p for p in products if p in matches)
        softmax = softmaxes[products.index(product)]
        if not softmax_over_last_axis(matches[softmax], builder):
            return call
        mask_value = matches[mask].value.numpy() if softmax is softmaxes[0] else None
        # the plan's bf16 roundings of the products' operands (bf16 engines): all four or none
        unrounded = [_bf16_rounded(operand, bound) for operand in
                     (matches[q], matches[scores].args[1], matches[product].args[0], matches[v])]
        rounded = unrounded[0] is not None
        if any((value is not None) != rounded for value in unrounded):
            return call
        # (k's rounding is above its permute)
        operand = {q: unrounded[0], k: matches[k], v: unrounded[3]} if rounded else {t: matches[t] for t in (q, k, v)}
        q_shape, k_shape, v_shape = (_known_shape(operand[t]) for t in (q, k, v))
        if q_shape is None or k_shape is None or v_shape is None or len(q_shape) < 2 or len(k_shape) < 2:
            return call
        permutes = [matches[keys_t]] + ([call] if call.op.name == "relax.permute_dims" else [])
        if any(p.attrs.axes is None for p in permutes):
            return call  # a full reversal of the axes: neither transpose this kernel takes
        axes = [int(a) for a in matches[keys_t].attrs.axes]
        out_axes = [int(a) for a in call.attrs.axes] if len(permutes) > 1 else None
        rank = len(q_shape)
        lead, (tq, depth) = q_shape[:-2], q_shape[-2:]
        tk = k_shape[-2]
        if k_shape != [*lead, tk, depth] \
                or v_shape[:-1] != [*lead, tk] or axes != [*range(rank - 2), rank - 1, rank - 2] \
                or any(str(operand[t].ty.dtype) != "float32" for t in (q, k, v)):
            return call
        if out_axes is not None and (rank != 4 or out_axes != [0, 2, 1, 3]):
            return call  # another transpose of the output: the pattern without it takes the product
        padded = -(-tq // queries_per_task) * queries_per_task
        shapes = _AttentionShapes(lead, tq, tk, depth, v_shape[-1], padded)
        bf16 = rounded and bf16_dots and shapes.bf16_dots_fit()
        views = [_view(operand[t], bound, scaled=t is q) for t in (q, k, v)]
        inputs, reads = [], []  # the distinct source tensors; the one each view reads
        for view in views:
            known = [n for n, source in enumerate(inputs) if source.same_as(view.source)]
            reads.append(known[0] if known else len(inputs))
            if not known:
                inputs.append(view.source)
        source_shapes = [_known_shape(source) for source in inputs]
        if None in source_shapes:
            return call
        if mask_value is not None:
            if mask_value.ndim < 2 or any(d != 1 for d in mask_value.shape[:-2]) or mask_value.shape[-2:] != (tq, tk):
                return call  # a mask per head or per image: not this kernel's
            transposed = mask_value.reshape(tq, tk).T.astype("float32")
            tail = np.repeat(transposed[:, -1:], padded - tq, axis=1)  # the padded queries repeat the last
            inputs.append(relax.const(np.ascontiguousarray(np.concatenate([transposed, tail], axis=1))))
        out_shape = [*lead, tq, v_shape[-1]] if out_axes is None else [lead[0], tq, lead[1], v_shape[-1]]
        if bf16:
            kernel = _bf16_attention_kernel(views, reads, source_shapes, shapes, mask_value is not None,
                                            out_axes is not None)
        else:
            kernel = _attention_kernel(views, reads, source_shapes, shapes, mask_value is not None,
                                       out_axes is not None, rounded)
        return relax.call_tir(builder.add_func(kernel, "attention"), inputs, relax.TensorType(out_shape, "float32"))

    return _kernel_rewrite_pass(patterns, rewriter, "FusedAttention", bindings=True)


class _View:
    """A tensor read through layout ops: ``source`` and the ops from the tensor down to it
    (each a reshape, permute_dims, strided_slice or squeeze), and a scalar ``scale`` applied."""

    OPS = ("relax.reshape", "relax.permute_dims", "relax.strided_slice", "relax.squeeze")

    def __init__(self, source, steps, scale=None):
        self.source, self.steps, self.scale = source, steps, scale

    def index(self, index):
        """The source's index of the tensor's element at ``index`` (TE expressions)."""
        from tvm import tirx

        for call in self.steps:
            op, in_shape = call.op.name, [int(d) for d in call.args[0].ty.shape]
            if op == "relax.squeeze":
                axes = call.attrs.axis
                dropped = ({int(a) % len(in_shape) for a in axes} if axes is not None
                           else {n for n, d in enumerate(in_shape) if d == 1})
                rest = iter(index)
                index = [0 if n in dropped else next(rest) for n in range(len(in_shape))]
            elif op == "relax.permute_dims":
                axes = call.attrs.axes
                axes = [int(a) for a in axes] if axes is not None else list(range(len(in_shape)))[::-1]
                moved = [None] * len(in_shape)
                for n, axis in enumerate(axes):
                    moved[axis] = index[n]
                index = moved
            elif op == "relax.strided_slice":
                axes, begin = ([int(v) for v in arg.fields] for arg in call.args[1:3])
                strides = [int(v) for v in call.args[4].fields] if len(call.args) > 4 else [1] * len(axes)
                index = list(index)
                for axis, start, stride in zip(axes, begin, strides):
                    axis %= len(in_shape)
                    index[axis] = (start % in_shape[axis]) + index[axis] * stride
            else:  # reshape: the same element in row-major order
                linear = 0
                for i, d in zip(index, [int(d) for d in call.ty.shape]):
                    linear = linear * d + i
                index = []
                for d in reversed(in_shape):
                    index.insert(0, tirx.floormod(linear, d))
                    linear = tirx.floordiv(linear, d)
        return index


def _view(expr, bound, scaled: bool = False) -> _View:
    """``expr`` as a _View of the tensor its layout ops read (``expr`` itself when there are
    none); with ``scaled``, a multiply by a scalar constant on top is part of the view."""
    from tvm import relax

    def value(e):
        return bound.get(e, e) if isinstance(e, relax.Var) else e

    scale = None
    node = value(expr)
    if scaled and isinstance(node, relax.Call) and node.op.name == "relax.multiply" \
            and _scalar_const(node.args[1]) is not None:
        scale, expr = float(_scalar_const(node.args[1]).value.numpy()), node.args[0]
    steps, node = [], value(expr)
    while isinstance(node, relax.Call) and node.op.name in _View.OPS and _static(node):
        steps.append(node)
        expr = node.args[0]
        node = value(expr)
    return _View(expr, steps, scale)


def _static(call) -> bool:
    """Are the shapes of ``call`` and of its input known numbers, and its slice bounds plain?"""
    if _known_shape(call) is None or _known_shape(call.args[0]) is None:
        return False
    if call.op.name == "relax.strided_slice":
        try:
            for arg in call.args[1:]:
                for bound in arg.fields:
                    int(bound)  # refuses a symbolic bound
        except (TypeError, ValueError, AttributeError):
            return False
    return True


_OPAQUE = 8  # TVM's OpPatternKind kOpaque: fused with nothing


def _bound(expr, bound):
    """``expr``'s value where it is a variable of the function (``bound``: {var: value})."""
    from tvm import relax

    return bound.get(expr, expr) if isinstance(expr, relax.Var) else expr


def _bf16_rounded(expr, bound):
    """x where ``expr`` is the bf16 plan's rounding ``astype(astype(x, bfloat16), float32)`` of
    an fp32 x, else None."""
    from tvm import relax

    outer = _bound(expr, bound)
    if not (isinstance(outer, relax.Call) and outer.op.name == "relax.astype" and str(outer.attrs.dtype) == "float32"):
        return None
    inner = _bound(outer.args[0], bound)
    if not (isinstance(inner, relax.Call) and inner.op.name == "relax.astype" and str(inner.attrs.dtype) == "bfloat16"):
        return None
    return inner.args[0] if str(inner.args[0].ty.dtype) == "float32" else None


class _AttentionShapes(NamedTuple):
    """An attention's sizes: ``lead`` (batch, heads), queries ``tq`` (``padded`` to whole query
    blocks), keys ``tk``, head ``depth`` (q and k) and ``width`` (v)."""

    lead: list
    tq: int
    tk: int
    depth: int
    width: int
    padded: int

    @property
    def depth_pairs(self) -> int:
        """Pairs of head terms (an odd depth padded with a zero term: PP-OCRv4's 15)."""
        return -(-self.depth // 2)

    def bf16_dots_fit(self) -> bool:
        """Can the bf16 kernel take these sizes: whole pairs of keys, whole 16-query blocks."""
        return self.tk % 2 == 0 and self.padded % 16 == 0


class _AttentionReads:
    """The attention kernel's inputs: one placeholder per distinct source tensor and readers of
    q, k, v through their views; ``ranged`` binds a compute's axes' bounds for simplifying the
    views' index arithmetic (a reshape's divisions and remainders), which left alone stays in
    the kernel's inner loops."""

    def __init__(self, views, reads, source_shapes):
        from tvm.sym.analyzer import Analyzer

        self.sources = [_placeholder(shape, f"source{n}") for n, shape in enumerate(source_shapes)]
        self.bounds = Analyzer()
        self.q, self.k, self.v = (self.reader(view, self.sources[n]) for view, n in zip(views, reads))

    def ranged(self, shape, body, *reductions):
        from tvm import ir, tirx

        def bound_body(*index):
            for var, extent in zip(index, _int64(shape)):
                self.bounds.bind(var, ir.Range(tirx.const(0, "int64"), extent))
            for axis in reductions:
                self.bounds.bind(axis.var, axis.dom)
            return body(*index)
        return bound_body

    def reader(self, view, source):
        from tvm import tirx

        def read(*index):
            value = source[tuple(self.bounds.simplify(i) for i in view.index(list(index)))]
            return value if view.scale is None else value * tirx.const(view.scale, "float32")
        return read


def _placeholder(shape, name, dtype="float32"):
    from tvm import te

    return te.placeholder(_int64(shape), dtype, name)


def _bf16_round(value):
    """``value`` rounded to bf16 as the plan does (``attention_bf16.rounded_bits``), back in fp32."""
    from .schedule_rules.attention_bf16 import rounded_bits

    return _from_bf16_bits(rounded_bits(value))


def _from_bf16_bits(bits):
    from tvm import tirx

    return tirx.reinterpret("float32", bits.astype("uint32") << tirx.const(16, "uint32"))


def _attention_kernel(views, reads, source_shapes, shapes: _AttentionShapes, masked: bool, heads_inside: bool,
                      rounded: bool = False):
    """The TE definition ``schedule_rules.attention`` schedules (its docstring gives the steps):
    q, k, v read through their ``views`` of the distinct source tensors; the output [*lead, tq,
    width], or with ``heads_inside`` [batch, tq, heads, width]. With ``rounded``, q, k, v and the
    exponentials are rounded to bf16 where they are read (the bf16 plan on a CPU without bf16
    arithmetic)."""
    from tvm import te

    from .schedule_rules import attention as names

    lead, tq, tk, depth, width, padded = shapes
    given = _AttentionReads(views, reads, source_shapes)
    ranged = given.ranged
    keep = _bf16_round if rounded else (lambda value: value)
    mask = _placeholder((tk, padded), "mask_t")
    queries = te.compute(_int64((*lead, depth, padded)),
                         ranged((*lead, depth, padded),
                                lambda *ix: keep(given.q(*ix[:-2], te.min(ix[-1], tq - 1), ix[-2]))),
                         name=names.QUERIES)
    d = te.reduce_axis(tuple(_int64((0, depth))), "d")
    scores = te.compute(_int64((*lead, tk, padded)),
                        ranged((*lead, tk, padded),
                               lambda *ix: te.sum(keep(given.k(*ix[:-2], ix[-2], d)) * queries[(*ix[:-2], d, ix[-1])],
                                                  axis=d), d),
                        name=names.SCORES)
    if masked:
        scores = te.compute(scores.shape, lambda *ix: scores[ix] + mask[ix[-2], ix[-1]], name=names.MASKED)
    top, exp, total = _softmax_down_keys(scores, lead, tk, padded)
    j = te.reduce_axis(tuple(_int64((0, tk))), "j")
    values = te.compute(_int64((*lead, padded, width)),
                        ranged((*lead, padded, width),
                               lambda *ix: te.sum(keep(exp[(*ix[:-2], j, ix[-2])]) * keep(given.v(*ix[:-2], j, ix[-1])),
                                                  axis=j), j),
                        name=names.VALUES)
    out = _attention_out(lambda *ix: values[ix], total, shapes, heads_inside)
    # Opaque to FuseOps: nothing else is computed in this kernel's loops.
    func = te.create_prim_func([*given.sources, *([mask] if masked else []), out]).without_attr("global_symbol")
    return func.with_attr("op_pattern", _OPAQUE)


def _softmax_down_keys(scores, lead, tk, padded):
    """The softmax's steps over the scores' key axis (the second last), keys past ``tk`` left
    out: (maxima, exponentials, sums)."""
    from tvm import te, topi

    from .schedule_rules import attention as names

    j = te.reduce_axis(tuple(_int64((0, tk))), "j")
    top = te.compute(_int64((*lead, padded)), lambda *ix: te.max(scores[(*ix[:-1], j, ix[-1])], axis=j),
                     name=names.MAX)
    delta = te.compute(scores.shape, lambda *ix: scores[ix] - top[(*ix[:-2], ix[-1])], name=names.DELTA)
    exp = topi.math.fast_exp(delta)
    j = te.reduce_axis(tuple(_int64((0, tk))), "j")
    total = te.compute(_int64((*lead, padded)), lambda *ix: te.sum(exp[(*ix[:-1], j, ix[-1])], axis=j),
                       name=names.SUM)
    return top, exp, total


def _attention_out(value, total, shapes: _AttentionShapes, heads_inside: bool):
    """The output: ``value(*lead, query, column)`` divided by the query's sum, [*lead, tq,
    width] or with ``heads_inside`` [batch, tq, heads, width]."""
    from tvm import te, tirx

    from .schedule_rules import attention as names

    lead, tq, width = shapes.lead, shapes.tq, shapes.width
    one = tirx.const(1.0, "float32")  # one division per query, hoisted out of the columns' loop
    if heads_inside:
        return te.compute(_int64((lead[0], tq, lead[1], width)),
                          lambda n, i, h, y: value(n, h, i, y) * (one / total[n, h, i]), name=names.OUT)
    return te.compute(_int64((*lead, tq, width)), lambda *ix: value(*ix) * (one / total[ix[:-1]]), name=names.OUT)


def _bf16_attention_kernel(views, reads, source_shapes, shapes: _AttentionShapes, masked: bool, heads_inside: bool):
    """The TE definition ``schedule_rules.attention_bf16`` schedules (its docstring gives the
    steps): both products of bf16 values with fp32 sums, in the bf16 product kernels' operand
    layouts (``schedule_rules.bf16_product``: bf16 rows times panels of bf16 pairs). Per batch
    and head: k's bf16 rows [keys, depth] and v's transposed [width, keys]; per block of 16
    queries: the queries as pair panels, S^T = K Q^T [keys, queries], the softmax down the
    keys, the rounded exponentials as pair panels, O^T = V^T P^T [width, queries], the output O
    / sums (an odd head depth padded with a zero term). The output as ``_attention_kernel``'s."""
    from tvm import te, tirx

    from .schedule_rules import attention_bf16 as names

    lead, tq, tk, depth, width, padded = shapes
    given = _AttentionReads(views, reads, source_shapes)
    ranged = given.ranged
    mask = _placeholder((tk, padded), "mask_t")
    terms = 2 * shapes.depth_pairs
    zero = tirx.const(0, "uint16")

    def key_bits(*ix):
        *at, key, term = ix
        return tirx.if_then_else(term < depth, names.rounded_bits(given.k(*at, key, te.min(term, depth - 1))), zero)

    k16 = te.compute(_int64((*lead, tk, terms)), ranged((*lead, tk, terms), key_bits), name=names.KEYS)
    vt16 = te.compute(_int64((*lead, width, tk)),
                      ranged((*lead, width, tk), lambda *ix: names.rounded_bits(given.v(*ix[:-2], ix[-1], ix[-2]))),
                      name=names.VALUES_T)
    blocks = padded // 16

    def query_pairs(*ix):
        *at, block, pair, lane, half = ix
        term = pair * 2 + half
        return tirx.if_then_else(term < depth, names.rounded_bits(given.q(*at, te.min(block * 16 + lane, tq - 1),
                                                                   te.min(term, depth - 1))), zero)

    q16 = te.compute(_int64((*lead, blocks, terms // 2, 16, 2)),
                     ranged((*lead, blocks, terms // 2, 16, 2), query_pairs), name=names.QUERIES)
    d = te.reduce_axis(tuple(_int64((0, terms))), "d")
    scores = te.compute(
        _int64((*lead, tk, padded)),
        lambda *ix: te.sum(_from_bf16_bits(k16[(*ix[:-2], ix[-2], d)])
                           * _from_bf16_bits(q16[(*ix[:-2], ix[-1] // 16, d // 2, ix[-1] % 16, d % 2)]), axis=d),
        name=names.SCORES)
    if masked:
        scores = te.compute(scores.shape, lambda *ix: scores[ix] + mask[ix[-2], ix[-1]], name=names.MASKED)
    top, exp, total = _softmax_down_keys(scores, lead, tk, padded)
    # (the pair panels as ``attention_bf16.pack_pairs`` converts two rows of exponentials)
    def probability_pairs(*ix):
        *at, block, pair, lane, half = ix
        return names.rounded_bits(exp[(*at, pair * 2 + half, block * 16 + lane)])

    p16 = te.compute(_int64((*lead, blocks, tk // 2, 16, 2)), probability_pairs, name=names.PROBABILITIES)
    j = te.reduce_axis(tuple(_int64((0, tk))), "j")
    values_t = te.compute(
        _int64((*lead, width, padded)),
        lambda *ix: te.sum(_from_bf16_bits(vt16[(*ix[:-2], ix[-2], j)])
                           * _from_bf16_bits(p16[(*ix[:-2], ix[-1] // 16, j // 2, ix[-1] % 16, j % 2)]), axis=j),
        name=names.VALUES)
    out = _attention_out(lambda *ix: values_t[(*ix[:-2], ix[-1], ix[-2])], total, shapes, heads_inside)
    func = te.create_prim_func([*given.sources, *([mask] if masked else []), out]).without_attr("global_symbol")
    return func.with_attr("op_pattern", _OPAQUE)


def pack_weights(target):
    """Matmuls by a constant weight [K, N] and NHWC convolutions (one group, a KxK window) by a
    constant HWIO weight read it as panels packed at build time, [ceil(N / nr), K, nr] and
    [ceil(Co / nr), KH, KW, Ci, nr]: nr is the register tile's width
    (``contraction.register_tile_width``), so every panel a tile reuses over the whole
    reduction is contiguous. A width that is not a whole number of tiles (PP-OCRv4's 6,625
    classes, its 60- and 120-channel convolutions) gets a last panel padded with zero columns;
    the kernel computes the padded width and keeps N.

    Why: read in place, a panel's rows lie N elements apart, and for SVTR's widths (128-1024)
    they fall into a few L1 sets and evict each other while the tile's rows stream past; the
    contraction rule would copy panels at run time, once per tile column and task (for a
    convolution over a small map, once for a handful of output rows); an odd width is a
    fraction of a vector wide in its last tile. Packed once here, every panel is contiguous at
    no run-time cost (docs give the measured effect). The products are the same sums in the
    same order, so the results are bitwise those of the unpacked engine. Weights one register
    tile wide are already contiguous panels and are left alone, as is every other operation.
    """
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    from .schedule_rules.common import CpuModel

    data, weight = wildcard(), is_const()
    matmul = is_op("relax.matmul")(data, weight)
    conv = is_op("relax.nn.conv2d")(data, weight)
    model = CpuModel.of(target)

    def rewriter(call, matches, builder):
        x, w = matches[data], matches[weight]
        x_shape, w_shape = _known_shape(x), _known_shape(w)
        if x_shape is None or w_shape is None:
            return call  # symbolic shapes
        dtype = str(w.ty.dtype)
        if str(x.ty.dtype) != dtype or _out_dtype(call.attrs) not in (None, dtype):
            return call
        if call.op.name == "relax.matmul":
            if len(w_shape) != 2 or len(x_shape) < 2 or x_shape[-1] != w_shape[0]:
                return call
            layout = _weight_panels(w.value.numpy(), model)
            if layout is None:
                return call
            panels, padded, nr = layout
            kernel = _panel_matmul(x_shape, *w_shape, padded, nr, dtype)
            name, out_shape = "matmul_packed", [*x_shape[:-1], w_shape[1]]
        else:
            attrs = call.attrs
            if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NHWC", "HWIO", "NHWC") \
                    or int(attrs.groups) != 1 or len(w_shape) != 4 or w_shape[0] * w_shape[1] == 1:
                return call
            layout = _weight_panels(w.value.numpy(), model)
            if layout is None:
                return call
            panels, padded, nr = layout
            window = _Window.of(attrs)
            kernel = _panel_conv(x_shape, w_shape, padded, nr, window, dtype)
            name, out_shape = "conv2d_packed", window.out_shape(x_shape, w_shape)
        handle = builder.add_func(kernel, name)
        return relax.call_tir(handle, [x, relax.const(panels)], relax.TensorType(out_shape, dtype))

    return _kernel_rewrite_pass([matmul, conv], rewriter, "PackWeights")


def bf16_products(target):
    """Products by weights of a bf16 engine whose weight is a constant of bf16 values and whose
    input the plan rounds to bf16 (``astype(astype(x, bfloat16), float32)``) become bf16 kernels
    reading ``astype(x, bfloat16)``, the value as the plan stores it (fusion puts that cast at
    the end of x's producing kernel, which then writes half the bytes): matmuls, and NHWC
    convolutions of one group whose input channels are whole 32-term rows (``TILE_K``: SVTR's
    patch embedding and merges, PP-OCRv4's neck). The kernel copies the bf16 bits, multiplies
    bf16 by bf16 and sums in fp32, the weights packed at build time into panels of bf16 pairs;
    a convolution's copy gathers each output pixel's window (the terms in the HWIO weight's
    order: window row, window column, input channel), so the product is the matmul's.
    Scheduled on AMX tiles (``schedule_rules.amx``) or with AVX-512 BF16 dot products
    (``schedule_rules.bf16_dot``). Depthwise (grouped) convolutions read the stored bf16 values
    too, with bf16 weights and fp32 sums (the depthwise rule). Only for targets with bf16
    arithmetic: elsewhere every product of a bf16 engine computes its rounded operands in fp32.

    Why: a tile instruction multiplies a 16 x 32 block of bf16 activations by a 32 x 16 block of
    weights (16,384 FLOP) and a ``vdpbf16ps`` does 64 FLOP where an fp32 FMA on AVX-512 does 32
    (docs give the measured effect). The products of bf16 values are exact in fp32, so the only
    difference from the storage plan's fp32 arithmetic is the order of the fp32 sums. A
    convolution's channels in 32-term rows keep each converted vector inside one window tap
    (contiguous channels of one input pixel, its tap found once per vector). Run before
    ``bf16_rounding`` (which replaces the pattern this one reads) and after the pointwise
    convolutions became matmuls.
    """
    import numpy as np
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    from .onnx_passes import round_to
    from .arithmetic import bf16_matrix_instructions, has_bf16_matrix_arithmetic, target_spec
    from .schedule_rules.bf16_product import TILE_K, reduction_multiple

    value, weight = wildcard(), is_const()
    narrow = is_op("relax.astype")(value)
    rounded = is_op("relax.astype")(narrow)
    matmul = is_op("relax.matmul")(rounded, weight)
    conv = is_op("relax.nn.conv2d")(rounded, weight)
    # the channels-last permute network_to_nhwc put between the plan's rounding (in NCHW) and
    # the convolution: a permute of rounded values is the rounding of the permuted values
    permuted = is_op("relax.permute_dims")(rounded)
    conv_of_permuted = is_op("relax.nn.conv2d")(permuted, weight)
    spec = target_spec(target)

    def rewriter(call, matches, builder):
        if not has_bf16_matrix_arithmetic(spec):
            return call
        if str(matches[narrow].attrs.dtype) != "bfloat16" or str(matches[rounded].attrs.dtype) != "float32":
            return call
        x, w = matches[value], matches[weight]
        x_shape, w_shape = _known_shape(matches.get(permuted, x)), _known_shape(w)
        if x_shape is None or w_shape is None or str(w.ty.dtype) != "float32" \
                or _out_dtype(call.attrs) not in (None, "float32"):
            return call
        weights = w.value.numpy()
        if not np.array_equal(round_to(weights, "bf16"), weights):
            return call
        # the kernel reads the values as the plan stores them, in bf16: the producer's kernel
        # rounds them as it writes them (half the bytes of fp32) and the product copies bits
        stored = matches[narrow]
        if permuted in matches:
            stored = relax.op.permute_dims(stored, matches[permuted].attrs.axes)
        if call.op.name == "relax.matmul":
            if len(w_shape) != 2 or len(x_shape) < 2 or x_shape[-1] != w_shape[0] or x_shape[-2] == 1:
                return call  # (a single row, as in a squeeze-excitation block: too small for tiles)
            panels, k_padded, n_padded = _bf16_pair_panels(weights, reduction_multiple(bf16_matrix_instructions(spec)))
            kernel = _bf16_matmul(x_shape, w_shape[0], w_shape[1], k_padded, n_padded)
            name, out_shape = "matmul_bf16", [*x_shape[:-1], w_shape[1]]
        else:
            attrs = call.attrs
            if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NHWC", "HWIO", "NHWC") \
                    or len(w_shape) != 4:
                return call
            if int(attrs.groups) > 1:
                # depthwise (grouped): no dot products, but the values read in bf16 all the same
                return relax.op.nn.conv2d(stored, relax.op.astype(w, "bfloat16"), attrs.strides,
                                          attrs.padding, attrs.dilation, attrs.groups, "NHWC", "HWIO", "NHWC",
                                          "float32")
            if w_shape[2] % TILE_K:
                return call
            kh, kw, ci, co = w_shape
            panels, k_padded, n_padded = _bf16_pair_panels(weights.reshape(kh * kw * ci, co), TILE_K)
            window = _Window.of(attrs)
            kernel = _bf16_conv(x_shape, w_shape, window, n_padded)
            name, out_shape = "conv2d_bf16", window.out_shape(x_shape, w_shape)
        handle = builder.add_func(kernel, name)
        return relax.call_tir(handle, [stored, relax.const(panels)], relax.TensorType(out_shape, "float32"))

    return _kernel_rewrite_pass([matmul, conv, conv_of_permuted], rewriter, "Bf16Products")


CHUNK_ATTR = "svtr.fp16_chunk"  # module attribute: an fp16 build's K-chunk (fp16_accumulate.setting)


def fp16_matmuls(target):
    """Matmuls of an fp16 engine whose weight is a constant of fp16 values and whose input the
    plan rounds to fp16 become K-chunked fp16 kernels (``fp16_accumulate``): x converted to fp16
    in the kernel (the same rounding), fp16 multiply-adds in chunks of the module's
    ``CHUNK_ATTR`` terms summed in fp32, the weights packed at build time in panels of the
    fp16 register tile's width. Only when the module carries the chunk (the build's K-chunked
    plan is on: CPUs with fp16 arithmetic); every other product of an fp16 engine computes its
    rounded operands in fp32. Run before ``bf16_products``' sibling passes that round values."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    value, weight = wildcard(), is_const()
    narrow = is_op("relax.astype")(value)
    rounded = is_op("relax.astype")(narrow)
    pattern = is_op("relax.matmul")(rounded, weight)

    @tvm.transform.module_pass(opt_level=0, name="Fp16Matmuls")
    def _pass(mod, _ctx):
        chunk = (mod.attrs or {}).get(CHUNK_ATTR) if mod.attrs is not None else None
        if chunk is None:
            return mod
        chunk = int(chunk)
        builder = relax.BlockBuilder(mod)

        def rewriter(call, matches):
            if str(matches[narrow].attrs.dtype) != "float16" or str(matches[rounded].attrs.dtype) != "float32":
                return call
            x, w = matches[value], matches[weight]
            x_shape, w_shape = _known_shape(x), _known_shape(w)
            if x_shape is None or w_shape is None or len(w_shape) != 2:
                return call
            k, n = w_shape
            weights = w.value.numpy()
            if str(w.ty.dtype) != "float32" or len(x_shape) < 2 or x_shape[-1] != k or x_shape[-2] == 1 \
                    or _out_dtype(call.attrs) not in (None, "float32") \
                    or not np.array_equal(weights.astype(np.float16).astype(np.float32), weights):
                return call  # (a single row, as in a squeeze-excitation block: too small to tile)
            panels, padded, nr = _fp16_panels(weights, target)
            kernel = builder.add_func(_fp16_chunked_matmul(x_shape, k, n, padded, nr, chunk), "chunked_matmul")
            return relax.call_tir(kernel, [x, relax.const(panels)], relax.TensorType([*x_shape[:-1], n], "float32"))

        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                builder.update_func(gv, rewrite_call(pattern, rewriter, func))
        return builder.get()

    return _pass


def _fp16_panels(weights, target):
    """An fp32 [K, N] weight of fp16 values as fp16 panels [padded / nr, K, nr]: N padded with
    zeros to whole fp16 vectors, nr the K-chunked rule's tile width for it."""
    import numpy as np

    from .schedule_rules.chunked_contraction import tile_width
    from .schedule_rules.common import CpuModel

    model = CpuModel.of(target)
    lanes = model.lanes(16)
    k, n = weights.shape
    padded = -(-n // lanes) * lanes
    nr = tile_width(padded, model)
    full = np.zeros((k, padded), np.float16)
    full[:, :n] = weights.astype(np.float16)
    return np.ascontiguousarray(full.reshape(k, padded // nr, nr).transpose(1, 0, 2)), padded, nr


def _fp16_chunked_matmul(x_shape, k, n, padded, nr, chunk):
    """x [..., K] (float32) @ fp16 panels -> [..., N] float32 in K-chunks
    (``fp16_accumulate.chunked_panel_te``), x converted to fp16 first."""
    from tvm import te

    from .fp16_accumulate import CONVERT_BLOCK, chunked_panel_te

    a = te.placeholder(_int64(x_shape), "float32", "A")
    b = te.placeholder(_int64((padded // nr, k, nr)), "float16", "B")
    a16 = te.compute(a.shape, lambda *index: a[index].astype("float16"), name=CONVERT_BLOCK)
    out = chunked_panel_te(a16, b, nr, chunk)
    return te.create_prim_func([a, b, _without_padded_columns(out, n, padded)]).without_attr("global_symbol")


def _bf16_pair_panels(weights, k_multiple: int):
    """A [K, N] float32 weight of bf16 values as AMX weight tiles' (and vdpbf16ps') layout: [Np / 16, Kp / 2, 16, 2]
    uint16 bf16 bits (16 output columns per panel, each row a pair of reduction terms per column),
    K padded to a multiple of ``k_multiple`` terms (``bf16_product.reduction_multiple``) and N
    to 16 columns with zeros; returns (panels, Kp, Np)."""
    import numpy as np

    from .schedule_rules.bf16_product import TILE_COLS

    k, n = weights.shape
    k_padded, n_padded = -(-k // k_multiple) * k_multiple, -(-n // TILE_COLS) * TILE_COLS
    bits = np.zeros((k_padded, n_padded), np.uint16)
    bits[:k, :n] = (np.ascontiguousarray(weights, np.float32).view(np.uint32) >> 16).astype(np.uint16)
    panels = bits.reshape(k_padded // 2, 2, n_padded // TILE_COLS, TILE_COLS).transpose(2, 0, 3, 1)
    return np.ascontiguousarray(panels), k_padded, n_padded


def _bf16_matmul(x_shape, k, n, k_padded, n_padded):
    """x [..., K] (bfloat16) @ bf16 pair panels -> [..., N] float32 (``_bf16_kernel``)."""
    from tvm import te, tirx

    a = te.placeholder(_int64(x_shape), "bfloat16", "A")

    def term(*index):
        *rows, kk = index
        return a[(*rows, tirx.min(kk, k - 1))], kk < k

    return _bf16_kernel(a, x_shape[:-1], term, k_padded, n, n_padded)


def _bf16_conv(x_shape, w_shape, window: "_Window", n_padded):
    """NHWC x (bfloat16) convolved with HWIO weights as bf16 pair panels of [KH * KW * Ci, Co]
    -> NHWC float32 (``_bf16_kernel``): a term kk of output pixel (y, x) is input channel
    kk % Ci of window tap (kk // (KW * Ci), kk // Ci % KW), zero in the padding."""
    from tvm import te, tirx

    (_, h, w, ci), (kh, kw, _, co) = x_shape, w_shape
    (sh, sw), (top, left, _, _), (dh, dw) = window.strides, window.padding, window.dilation
    a = te.placeholder(_int64(x_shape), "bfloat16", "A")

    def term(i, y, x, kk):
        row = y * sh + kk // (kw * ci) * dh - top
        col = x * sw + kk // ci % kw * dw - left
        inside = tirx.all(row >= 0, row < h, col >= 0, col < w)
        clamp = lambda v, extent: tirx.max(tirx.min(v, extent - 1), 0)  # noqa: E731
        return a[i, clamp(row, h), clamp(col, w), kk % ci], inside

    _, ho, wo, _ = window.out_shape(x_shape, w_shape)
    return _bf16_kernel(a, [x_shape[0], ho, wo], term, kh * kw * ci, co, n_padded)


def _bf16_kernel(a, rows, term, k_padded, n, n_padded):
    """The bf16 product kernel of ``schedule_rules.bf16_product``: blocks ``bf16_a`` ([*rows,
    Kp] bits of the bf16 terms ``term(*row, kk)`` gives as (an activation of ``a``, whether it
    is one), zero where it is not) and ``bf16_matmul`` (fp32 sums over Kp against the pair
    panels [Np / 16, Kp / 2, 16, 2], N padded), the padded columns dropped on the way out."""
    from tvm import te, tirx

    from .schedule_rules.bf16_product import A_BLOCK, MATMUL_BLOCK, TILE_COLS

    b = te.placeholder(_int64((n_padded // TILE_COLS, k_padded // 2, TILE_COLS, 2)), "uint16", "B")

    def bits(*index):
        value, real = term(*index)
        return tirx.if_then_else(real, tirx.reinterpret("uint16", value), tirx.const(0, "uint16"))

    a16 = te.compute(_int64((*rows, k_padded)), bits, name=A_BLOCK)
    r = te.reduce_axis(tuple(_int64((0, k_padded))), "k")

    def product(*index):
        *row, j = index
        weight = b[j // TILE_COLS, r // 2, j % TILE_COLS, r % 2]
        return te.sum(_from_bf16_bits(a16[(*row, r)]) * _from_bf16_bits(weight), axis=r)

    out = te.compute(_int64((*rows, n_padded)), product, name=MATMUL_BLOCK)
    return te.create_prim_func([a, b, _without_padded_columns(out, n, n_padded)]).without_attr("global_symbol")


def _weight_panels(weights, model):
    """(panels, padded width, nr) for a weight whose last axis is the output (N, Co):
    [padded / nr, *leading axes, nr], zero beyond the width; None when one tile is the whole
    width already (nothing to lay out or pad) or the width's tile is not whole vectors."""
    import numpy as np

    from .schedule_rules.contraction import register_tile_width

    bits = weights.dtype.itemsize * 8
    width = weights.shape[-1]
    padded = panel_width(width, model, bits)
    nr = register_tile_width(padded, model, bits)
    if (nr >= padded and padded == width) or padded % nr or nr % model.lanes(bits):
        return None
    full = np.zeros((*weights.shape[:-1], padded), weights.dtype)
    full[..., :width] = weights
    panels = full.reshape(*weights.shape[:-1], padded // nr, nr)
    return np.ascontiguousarray(np.moveaxis(panels, -2, 0)), padded, nr


def _int64(values):
    """Shapes and bounds in int64, as the kernels Relax legalises are indexed."""
    import tvm

    return [tvm.tirx.IntImm("int64", v) for v in values]


def _without_padded_columns(out, width: int, padded: int):
    """``out`` with its last axis cut back to ``width``: the padded panel's zero columns are
    dropped on the way out, per tile (the epilogue copies only the real ones)."""
    from tvm import te

    if padded == width:
        return out
    return te.compute(_int64((*[int(d) for d in out.shape[:-1]], width)), lambda *index: out[index],
                      name="packed_columns")


def _panel_matmul(x_shape, k, n, padded, nr, dtype):
    from tvm import te

    a = te.placeholder(_int64(x_shape), dtype, "A")
    b = te.placeholder(_int64((padded // nr, k, nr)), dtype, "B")
    r = te.reduce_axis(tuple(_int64((0, k))), "k")

    def product(*index):
        *rows, j = index
        return te.sum(a[(*rows, r)] * b[j // nr, r, j % nr], axis=r)

    out = te.compute(_int64((*x_shape[:-1], padded)), product, name="matmul")
    return te.create_prim_func([a, b, _without_padded_columns(out, n, padded)]).without_attr("global_symbol")


class _Window:
    """A 2-D convolution's strides, padding [top, left, bottom, right] and dilation."""

    def __init__(self, strides, padding, dilation):
        self.strides, self.padding, self.dilation = strides, padding, dilation

    @classmethod
    def of(cls, attrs) -> "_Window":
        """The window of a Relax conv2d's attributes."""
        return cls([int(v) for v in attrs.strides], [int(v) for v in attrs.padding], [int(v) for v in attrs.dilation])

    def out_shape(self, x_shape, w_shape):
        (n, h, w, _), (kh, kw, _, co) = x_shape, w_shape
        (sh, sw), (top, left, bottom, right), (dh, dw) = self.strides, self.padding, self.dilation
        return [n, (h + top + bottom - dh * (kh - 1) - 1) // sh + 1, (w + left + right - dw * (kw - 1) - 1) // sw + 1, co]


def _panel_conv(x_shape, w_shape, padded, nr, window: _Window, dtype):
    """NHWC convolution by HWIO weights in [padded / nr, KH, KW, Ci, nr] panels; the zero
    padding a stage of its own (the schedule inlines it into the window reads)."""
    from tvm import te, tirx

    (n, h, w, ci), (kh, kw, _, co) = x_shape, w_shape
    (sh, sw), (top, left, bottom, right), (dh, dw) = window.strides, window.padding, window.dilation
    a = te.placeholder(_int64(x_shape), dtype, "A")
    b = te.placeholder(_int64((padded // nr, kh, kw, ci, nr)), dtype, "B")
    if top or left or bottom or right:
        def pad(i, y, x, c):
            inside = tirx.all(y >= top, y < h + top, x >= left, x < w + left)
            return tirx.if_then_else(inside, a[i, y - top, x - left, c], tirx.const(0, dtype))

        source = te.compute(_int64((n, h + top + bottom, w + left + right, ci)), pad, name="pad")
    else:
        source = a
    ry, rx, rc = (te.reduce_axis(tuple(_int64((0, extent))), name) for extent, name in ((kh, "ry"), (kw, "rx"), (ci, "rc")))
    _, ho, wo, _ = window.out_shape(x_shape, w_shape)

    def product(i, y, x, j):
        return te.sum(source[i, y * sh + ry * dh, x * sw + rx * dw, rc] * b[j // nr, ry, rx, rc, j % nr],
                      axis=[ry, rx, rc])

    out = te.compute(_int64((n, ho, wo, padded)), product, name="conv2d")
    return te.create_prim_func([a, b, _without_padded_columns(out, co, padded)]).without_attr("global_symbol")


# A wider register tile is worth up to this share of extra (zero) columns.
PANEL_PADDING_SHARE = 1 / 16


def panel_width(width: int, model, dtype_bits: int) -> int:
    """The width a weight's panels cover: ``width`` rounded up to whole vectors, and further to
    a multiple of a wider register tile where that adds at most PANEL_PADDING_SHARE of zero
    columns (AVX-512: 6,625 -> 6,656, 416 vectors, 4-vector tiles, rather than 6,640, whose
    415 vectors only 1-vector tiles divide)."""
    from .schedule_rules.common import MAX_TILE_VECTORS

    lanes = model.lanes(dtype_bits)
    padded = -(-width // lanes) * lanes
    best = model.tile_vectors(padded, dtype_bits)
    for vectors in range(MAX_TILE_VECTORS, best, -1):
        wider = -(-width // (vectors * lanes)) * vectors * lanes
        if model.tile_vectors(wider, dtype_bits) == vectors and wider - width <= width * PANEL_PADDING_SHARE:
            return wider
    return padded
