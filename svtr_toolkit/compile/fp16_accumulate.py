"""K-chunked fp16 accumulation for the fp16 recogniser's products by weights.

x86 has no fp16-in / fp32-accumulate FMA: an fp16 product with an fp32 sum is two conversions
around every multiply-add, slower than fp32 (docs give the measured rates), while an fp16 sum
of the whole K carries about K/2 roundings at the running sum's magnitude and loses too much.
So each product is computed as

    part[..., i, j, c] = sum_{r < chunk} a[..., i, c*chunk + r] * b[c*chunk + r, j]   (fp16)
    out[..., i, j]     = sum_c float32(part[..., i, j, c])                          (fp32)

almost every multiply-add is fp16 and the chunk sums are added in fp32: the error grows with
the chunk length instead of with K. A K that the chunk does not divide gets chunks made as even
as they can be, and a shorter last one where even chunks do not divide it (its missing terms are
zeros). Layer-norm statistics, softmax sums and every other reduction keep fp32 accumulation.

The plan is a setting (``setting``): on where the target CPU has fp16 arithmetic, off
elsewhere, forced either way with ``SVTR_FP16_ACCUMULATE``; the chunk is ``SVTR_FP16_CHUNK``.
Engines get these kernels through ``relax_passes.fp16_matmuls`` (weights in panels, the
activations converted in the kernel); ``rewrite_matmuls`` rewrites any fp16 x fp16 matmul, for
the kernel benchmark (tools/bench_kernels.py). The schedule is
``schedule_rules.chunked_contraction``. Where the plan is off, a CPU engine computes its fp16
values in fp32 arithmetic (``precision.reduced_mode``).
"""
from __future__ import annotations

import os

from ..errors import ToolkitError
from .arithmetic import has_fp16_arithmetic

# Terms per chunk. The chunk moves the error, not the argmax: on the golden SVTR rows and real
# crops every chunk from 16 to the whole K flipped the same near-ties, while the mean error
# grows with the chunk; each chunk ends with a few widening and fp32 adds per accumulator
# against ``chunk`` fp16 multiply-adds. 64 keeps the error near the fp32-accumulating one at a
# few per cent of extra instructions, and makes attention's head products (K = 32) and stage
# 1's layers (K = 64) one chunk (docs give the measurements behind this).
DEFAULT_CHUNK = 64
ENV_MODE = "SVTR_FP16_ACCUMULATE"  # auto (default) | on | off
ENV_CHUNK = "SVTR_FP16_CHUNK"  # terms per fp16 partial sum; "none" (or 0): the whole K in fp16
MODES = ("auto", "on", "off")
PARTIAL_BLOCK = "chunk_partial"  # the block names the schedule rule recognises
CONVERT_BLOCK = "fp16_a"  # the activations converted to fp16 (relax_passes.fp16_matmuls)
SUM_BLOCK = "chunk_sum"
KERNEL_NAME = "chunked_matmul"


def _parse_chunk(raw: str, source: str) -> int:
    raw = raw.strip().lower()
    if raw in ("none", "0"):
        return 0
    try:
        chunk = int(raw)
    except ValueError:
        chunk = -1
    if chunk < 1:
        raise ToolkitError(f"{source}={raw!r}: give the number of terms per fp16 partial sum (e.g. 64), "
                           f"or 'none' for the whole K in fp16")
    return chunk


def _chunk_from_env() -> int:
    raw = os.environ.get(ENV_CHUNK, "").strip()
    return DEFAULT_CHUNK if raw == "" else _parse_chunk(raw, ENV_CHUNK)


def setting(precision: str, spec: dict | None, mode: str | None = None, chunk: int | None = None) -> dict | None:
    """The K-chunked accumulation an engine of ``precision`` for target ``spec`` gets, as the
    build description records it ({"chunk": terms, 0 = whole K in fp16}), or None when it is
    off (a CPU engine then computes its fp16 values in fp32, a GPU keeps ToMixedPrecision's
    fp32 accumulation).

    ``mode`` (default: ``SVTR_FP16_ACCUMULATE``, else ``auto``): ``auto`` turns it on for fp16
    engines on an LLVM target with fp16 arithmetic; ``on`` forces it on any LLVM target (fp16
    arithmetic is then emulated: for checking numerics on CPUs without it, slower); ``off``
    never. ``chunk`` (default: ``SVTR_FP16_CHUNK``, else ``DEFAULT_CHUNK``): terms per chunk.
    """
    if mode is None:
        mode = os.environ.get(ENV_MODE, "auto").strip().lower() or "auto"
        source = ENV_MODE
    else:
        source = "fp16 accumulate mode"
    if mode not in MODES:
        raise ToolkitError(f"{source}={mode!r}: choose from {', '.join(MODES)}")
    if precision != "fp16" or mode == "off" or not spec or spec.get("kind") != "llvm":
        return None
    if mode == "auto" and not has_fp16_arithmetic(spec):
        return None
    return {"chunk": _chunk_from_env() if chunk is None else chunk}


# The benchmark's fp16 variants, named as its table shows them: "off" is fp16 values in fp32 arithmetic,
# a number is a chunk, "none" is the whole K in fp16 (the words of SVTR_FP16_ACCUMULATE and
# SVTR_FP16_CHUNK).
def parse_variants(text: str) -> list:
    """``off,32,64,none`` -> [(label, {"mode": ..., "chunk": ...}), ...] with labels
    ``fp32arith``, ``k32``, ``k64``, ``wholeK``; each forced, whatever the CPU."""
    variants, labels = [], set()
    for item in (part.strip().lower() for part in text.split(",")):
        if not item:
            raise ToolkitError(f"fp16 variants {text!r}: an empty item (give e.g. off,32,64,128,none)")
        if item == "off":
            label, chosen = "fp32arith", {"mode": "off", "chunk": None}
        else:
            chunk = _parse_chunk(item, "fp16 variant")
            label, chosen = ("wholeK" if chunk == 0 else f"k{chunk}"), {"mode": "on", "chunk": chunk}
        if label in labels:
            raise ToolkitError(f"fp16 variants {text!r}: {item!r} is given twice")
        labels.add(label)
        variants.append((label, chosen))
    return variants


def describe(chosen: dict | None) -> str:
    if chosen is None:
        return ""
    chunk = chosen["chunk"]
    return ("recogniser matmuls fp16 multiply-accumulate, fp32 sum every "
            + (f"{chunk} terms (K-chunk {chunk})" if chunk else "K (no promotion: whole K in fp16)"))


def _chunks(k: int, chunk: int) -> tuple[int, int]:
    """(terms per chunk, number of chunks) for a reduction of ``k`` terms: the fewest chunks
    of at most ``chunk`` terms (0: one chunk), made as even as they can be, so that a K the
    chunk does not divide is usually split without a remainder (SVTR's K = 100, 200 at
    chunk 64: 2 and 4 chunks of 50). Where even chunks do not divide K either, the last
    chunk is short (``chunked_matmul_te`` zeroes its missing terms)."""
    count = 1 if chunk <= 0 or chunk >= k else -(-k // chunk)
    return -(-k // count), count


def chunked_matmul_te(a, b, chunk: int = DEFAULT_CHUNK):
    """TE: ``a`` [..., M, K] @ ``b`` [..., K, N] (fp16, batch axes broadcast as numpy's
    matmul) with fp16 partial sums over ``chunk`` terms added in fp32; returns the fp32
    output. Both stages are one kernel (blocks ``chunk_partial`` and ``chunk_sum``)."""
    from tvm import te, tirx

    a_shape, b_shape = [int(d) for d in a.shape], [int(d) for d in b.shape]
    (m, k), (k2, n) = a_shape[-2:], b_shape[-2:]
    if k != k2:
        raise ValueError(f"matmul K mismatch: {a_shape} @ {b_shape}")
    a_batch, b_batch = a_shape[:-2], b_shape[:-2]
    rank = max(len(a_batch), len(b_batch))
    a_batch, b_batch = [1] * (rank - len(a_batch)) + a_batch, [1] * (rank - len(b_batch)) + b_batch
    batch = []
    for x, y in zip(a_batch, b_batch):
        if x != y and 1 not in (x, y):
            raise ValueError(f"matmul batch axes do not broadcast: {a_shape} @ {b_shape}")
        batch.append(max(x, y))
    a_skip, b_skip = rank - (len(a_shape) - 2), rank - (len(b_shape) - 2)

    def pick(index, dims, skip):
        return [0 if dims[d] == 1 else index[d] for d in range(skip, rank)]

    size, count = _chunks(k, chunk)
    ragged = size * count != k
    r = te.reduce_axis((0, size), "r")

    def partial(*index):
        *outer, i, j, c = index
        kk = c * size + r
        if ragged:
            # The last chunk is short: its missing terms are 0 * b[K - 1, j]. The guard is on
            # a (the scalar the schedule broadcasts across j), so the vector FMA of b's row
            # stays unconditional; a branch around it would keep the partial sums in memory.
            safe = tirx.min(kk, k - 1)
            term = tirx.if_then_else(kk < k, a[(*pick(outer, a_batch, a_skip), i, safe)],
                                     tirx.const(0, "float16")) * b[(*pick(outer, b_batch, b_skip), safe, j)]
        else:
            term = a[(*pick(outer, a_batch, a_skip), i, kk)] * b[(*pick(outer, b_batch, b_skip), kk, j)]
        return te.sum(term.astype("float16"), axis=r)

    part = te.compute([*batch, m, n, count], partial, name=PARTIAL_BLOCK)
    if count == 1:  # the whole K in fp16 (no promotion): the sum is a cast
        return te.compute([*batch, m, n], lambda *index: part[(*index, 0)].astype("float32"), name=SUM_BLOCK)
    c = te.reduce_axis((0, count), "c")
    return te.compute([*batch, m, n], lambda *index: te.sum(part[(*index, c)].astype("float32"), axis=c),
                      name=SUM_BLOCK)


def chunked_panel_te(a, b, nr: int, chunk: int = DEFAULT_CHUNK):
    """TE: ``a`` [..., K] (fp16) @ ``b`` weight panels [W / nr, K, nr] (fp16) -> [..., W] fp32,
    fp16 partial sums over chunks of at most ``chunk`` terms added in fp32 (blocks
    ``chunk_partial`` and ``chunk_sum``, as ``chunked_matmul_te``)."""
    from tvm import te, tirx

    a_shape, b_shape = [int(d) for d in a.shape], [int(d) for d in b.shape]
    k, width = a_shape[-1], b_shape[0] * nr
    if b_shape[1] != k:
        raise ValueError(f"matmul K mismatch: {a_shape} @ panels {b_shape}")
    size, count = _chunks(k, chunk)
    ragged = size * count != k
    r = te.reduce_axis((tirx.IntImm(str(a.shape[0].ty), 0), tirx.IntImm(str(a.shape[0].ty), size)), "r")

    def partial(*index):
        *rows, j, c = index
        kk = c * size + r
        if ragged:  # the guard on a, as in chunked_matmul_te: b's vector FMA stays unconditional
            safe = tirx.min(kk, k - 1)
            term = tirx.if_then_else(kk < k, a[(*rows, safe)], tirx.const(0, "float16")) * b[j // nr, safe, j % nr]
        else:
            term = a[(*rows, kk)] * b[j // nr, kk, j % nr]
        return te.sum(term.astype("float16"), axis=r)

    def dims(*values):  # the index type of ``a``'s shape (int64 in kernels Relax legalises)
        return [tirx.IntImm(str(a.shape[0].ty), v) for v in values]

    part = te.compute(dims(*a_shape[:-1], width, count), partial, name=PARTIAL_BLOCK)
    if count == 1:
        return te.compute(dims(*a_shape[:-1], width), lambda *index: part[(*index, 0)].astype("float32"),
                          name=SUM_BLOCK)
    c = te.reduce_axis(tuple(dims(0, count)), "c")
    return te.compute(dims(*a_shape[:-1], width), lambda *index: te.sum(part[(*index, c)].astype("float32"), axis=c),
                      name=SUM_BLOCK)


def reference(a, b, chunk: int = DEFAULT_CHUNK):
    """numpy: the same arithmetic as ``chunked_matmul_te`` (2-D ``a`` @ ``b``): each fp16 product
    rounded to fp16 and added to an fp16 running sum in k order, one running sum per chunk,
    the chunk sums added in fp32 in chunk order. For tests and the accuracy table."""
    import numpy as np

    a, b = np.asarray(a, np.float16), np.asarray(b, np.float16)
    k = a.shape[-1]
    size, count = _chunks(k, chunk)
    out = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for c in range(count):
        acc = np.zeros_like(out, dtype=np.float16)
        for kk in range(c * size, min((c + 1) * size, k)):
            acc = acc + a[:, kk:kk + 1] * b[kk:kk + 1, :]
        out = out + acc.astype(np.float32)
    return out


def rewrite_matmuls(mod, chunk: int = DEFAULT_CHUNK):
    """Every ``matmul(fp16, fp16, out_dtype=float32)`` of ``mod``'s Relax functions (ToMixed-
    Precision's products; the fp32 parts have none) becomes a call of ``chunked_matmul_te``.
    Returns (module, number rewritten).

    Convolutions keep fp32 accumulation: their reduction runs over three axes (input
    channels, kernel rows, kernel columns), which a chunk would have to split across; they
    are about 8 % of the recogniser's multiply-adds, and the NHWC conversion and the
    contraction rule that make them fast work on the ``conv2d`` operator this would replace.
    """
    from tvm import ir, relax, tirx

    matmul = ir.Op.get("relax.matmul")

    def static(expr):
        ty = expr.ty
        return (isinstance(ty, relax.TensorType) and isinstance(ty.shape, relax.ShapeExpr)
                and all(isinstance(d, tirx.IntImm) for d in ty.shape.values))

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def __init__(self, module):
            super().__init__(module)
            self.module = module
            self.count = 0

        def visit_call_(self, call):
            call = self.visit_expr_post_order(call)
            if not (isinstance(call.op, ir.Op) and call.op.same_as(matmul)):
                return call
            a, b = call.args
            if (str(call.attrs.out_dtype) != "float32" or not (static(a) and static(b))
                    or a.ty.dtype != "float16" or b.ty.dtype != "float16" or a.ty.ndim < 2 or b.ty.ndim < 2):
                return call
            self.count += 1
            return self.builder_.call_te(chunked_matmul_te, a, b, chunk=chunk, primfunc_name_hint=KERNEL_NAME)

        def run(self):
            for gv, func in self.module.functions_items():
                if isinstance(func, relax.Function):
                    self.builder_.update_func(gv, self.visit_expr(func))
            return self.builder_.get()

    rewriter = Rewriter(mod)
    return rewriter.run(), rewriter.count
