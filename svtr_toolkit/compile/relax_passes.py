"""Relax graph rewrites applied when building engines."""


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


def _out_dtype(attrs) -> str | None:
    """An op's ``out_dtype`` attribute, None where it is unset (the op's input dtype)."""
    out_dtype = str(attrs.out_dtype)
    return None if out_dtype in ("", "None", "void") else out_dtype


def convs_to_nhwc():
    """Run KxK convolutions (K > 1, groups 1) in NHWC with HWIO weights, NCHW around them.

    Why: with NCHW/OIHW the innermost loops of a 3x3 window walk strided memory, and
    MetaSchedule finds no fast conv2d schedule for SVTR's small-map, wide convolutions;
    in NHWC/HWIO the output channels are contiguous in both the output and the weights
    and vectorise (the README gives the measured effect). The
    transposes in and out fuse with the bias/activation around the conv; the weight
    transpose is constant-folded. 1x1 convs already are plain GEMMs and keep NCHW.
    """
    from tvm import relax
    from tvm.relax.dpl import is_op, wildcard

    data, weight = wildcard(), wildcard()
    pattern = is_op("relax.nn.conv2d")(data, weight)

    def rewriter(call, matches):
        attrs = call.attrs
        try:
            _, _, kh, kw = (int(d) for d in matches[weight].ty.shape)
        except (TypeError, ValueError, AttributeError):
            return call
        if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or int(attrs.groups) != 1 or kh * kw == 1:
            return call
        conv = relax.op.nn.conv2d(
            relax.op.permute_dims(matches[data], [0, 2, 3, 1]), relax.op.permute_dims(matches[weight], [2, 3, 1, 0]),
            strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation, groups=1,
            data_layout="NHWC", kernel_layout="HWIO", out_layout="NHWC",
            out_dtype=_out_dtype(attrs))
        return relax.op.permute_dims(conv, [0, 3, 1, 2])

    return _call_rewrite_pass(pattern, rewriter, "ConvsToNHWC")


# Output channels of NHWC convolutions are padded to a multiple of this (AVX2's fp32 lanes;
# AVX-512's 16 lanes take 8-wide rows as half vectors, still without shuffles).
CHANNEL_MULTIPLE = 8


def conv_channels_to_whole_vectors(multiple: int = CHANNEL_MULTIPLE):
    """NHWC/HWIO convolutions whose output channels are not a whole number of vectors (and
    more than two vectors' worth) get zero weights up to the next multiple, and the extra
    channels are sliced off again.

    Why: the output channel is the vectorised axis of an NHWC convolution. A width like 60
    (PP-OCRv4's neck) splits into vector tiles of 15 lanes, which LLVM assembles and spills lane
    by lane (the README gives the measured effect). Padding costs the extra channels' arithmetic
    (60 -> 64: 7 %); the zero weights make the extra channels exactly zero, and they never leave
    the convolution. Convolutions a schedule can already tile with whole vectors are left alone.
    """
    from tvm import relax
    from tvm.relax.dpl import is_op, wildcard

    data, weight = wildcard(), wildcard()
    pattern = is_op("relax.nn.conv2d")(data, weight)

    def rewriter(call, matches):
        attrs = call.attrs
        if attrs.data_layout != "NHWC" or attrs.kernel_layout != "HWIO" or int(attrs.groups) != 1:
            return call
        try:
            cout = int(matches[weight].ty.shape[3])
        except (TypeError, ValueError, AttributeError, IndexError):
            return call
        if cout % multiple == 0 or cout <= 2 * multiple:
            return call
        padded = -(-cout // multiple) * multiple
        conv = relax.op.nn.conv2d(
            matches[data], relax.op.nn.pad(matches[weight], [0, 0, 0, 0, 0, 0, 0, padded - cout]),
            strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation, groups=1,
            data_layout="NHWC", kernel_layout="HWIO", out_layout="NHWC",
            out_dtype=_out_dtype(attrs))
        return relax.op.strided_slice(conv, axes=[3], begin=[0], end=[cout])

    return _call_rewrite_pass(pattern, rewriter, "ConvChannelsToWholeVectors")


def pack_matmul_weights(target):
    """Matmuls by a constant weight [K, N] read it as [N / nr, K, nr] panels, packed at build
    time: nr is the register tile's width (``contraction.register_tile_width``), so every K x nr
    panel a tile reuses over the whole reduction is contiguous.

    Why: read in place, a panel's rows lie N elements apart, and for SVTR's widths (128-1024)
    they fall into a few L1 sets and evict each other while the tile's rows stream past; the
    contraction rule packs large panels at run time, once per tile column and task, and small
    ones not at all. Packed once here, every panel is contiguous at no run-time cost (the
    README gives the measured effect). The product is the same sum in the same order, so the
    results are bitwise those of the unpacked engine. Weights whose rows are one register
    tile wide are already contiguous panels and are left alone, as is every other matmul.
    (Not ``_call_rewrite_pass``: each rewrite also adds its kernel to the module.)
    """
    import numpy as np
    import tvm
    from tvm import relax, te
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    from .schedule_rules.common import CpuShape
    from .schedule_rules.contraction import register_tile_width

    data, weight = wildcard(), is_const()
    pattern = is_op("relax.matmul")(data, weight)
    shape = CpuShape.of(target)

    @tvm.transform.module_pass(opt_level=0, name="PackMatmulWeights")
    def _pass(mod, _ctx):
        builder = relax.BlockBuilder(mod)

        def rewriter(call, matches):
            x, w = matches[data], matches[weight]
            try:
                x_shape = [int(d) for d in x.ty.shape]
                k, n = (int(d) for d in w.ty.shape)
            except (TypeError, ValueError, AttributeError):
                return call  # symbolic shapes, or a weight that is not a matrix
            dtype = str(w.ty.dtype)
            if len(x_shape) < 2 or x_shape[-1] != k or str(x.ty.dtype) != dtype \
                    or _out_dtype(call.attrs) not in (None, dtype):
                return call
            lanes = shape.lanes(tvm.DataType(dtype).bits)
            nr = register_tile_width(n, lanes)
            if nr >= n or n % nr or nr % lanes:
                return call
            panels = np.ascontiguousarray(w.value.numpy().reshape(k, n // nr, nr).transpose(1, 0, 2))
            kernel = builder.add_func(_panel_matmul(x_shape, k, n, nr, dtype), "matmul_packed")
            return relax.call_tir(kernel, [x, relax.const(panels)],
                                  relax.TensorType([*x_shape[:-1], n], dtype))

        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                builder.update_func(gv, rewrite_call(pattern, rewriter, func))
        return builder.get()

    def _panel_matmul(x_shape, k, n, nr, dtype):
        def int64(values):  # indexed in int64, as the kernels Relax legalises are
            return [tvm.tirx.IntImm("int64", v) for v in values]

        a = te.placeholder(int64(x_shape), dtype, "A")
        b = te.placeholder(int64((n // nr, k, nr)), dtype, "B")
        r = te.reduce_axis(tuple(int64((0, k))), "k")

        def product(*index):
            *rows, j = index
            return te.sum(a[(*rows, r)] * b[j // nr, r, j % nr], axis=r)

        out = te.compute(int64((*x_shape[:-1], n)), product, name="matmul")
        return te.create_prim_func([a, b, out]).without_attr("global_symbol")

    return _pass
