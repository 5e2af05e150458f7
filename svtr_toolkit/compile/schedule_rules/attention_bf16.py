"""Attention in one kernel with bf16 dot products, as ``relax_passes.fused_attention`` builds it
for a bf16 engine on a CPU with AVX-512 BF16 (``vdpbf16ps``).

Both products are the bf16 product kernels' register tiles (``bf16_dot.register_intrinsic``:
bf16 rows, one broadcast pair per row and step, times panels of bf16 pairs 16 columns wide),
with the queries as the panels' columns, so the softmax between them still runs elementwise
across a vector of queries, as in the fp32 kernel (``attention``):

- per batch and head (the parallel task): ``attention_keys_bf16``, K's bf16 rows [keys,
  depth] (an odd depth padded with a zero term), and ``attention_values_t_bf16``, V transposed
  [width, keys], converted once for all the head's query blocks;
- per block of 16 queries: ``attention_queries`` (the block as pair panels [depth / 2, 16, 2]),
  ``attention_scores`` S^T = K Q^T [keys, 16] (tiles of key rows), the softmax down the keys
  (``attention_max``, ``T_fast_exp``, ``attention_sum``: the fp32 kernel's steps),
  ``attention_probabilities`` (the exponentials rounded to bf16 as pair panels [keys / 2, 16,
  2]), ``attention_values`` O^T = V^T P^T [width, 16] (tiles of V's columns) and
  ``attention_out``, O divided by the sums.

Why: the fp32 kernel's products are fp32 FMAs; a ``vdpbf16ps`` does twice an FMA's arithmetic
(docs give the measured effect).
"""
from __future__ import annotations

from ..arithmetic import has_bf16_dot_products, target_spec
from .attention import DELTA, EXP, MASKED, MAX, OUT, QUERIES, SCORES, SUM, VALUES, FusedAttention, query_blocks
from .bf16_dot import register_intrinsic
from .bf16_product import TILE_COLS
from .common import divisor_near, int_extent
from .rule import CpuRule

__all__ = ["DELTA", "EXP", "MASKED", "MAX", "OUT", "QUERIES", "SCORES", "SUM", "VALUES", "KEYS", "VALUES_T",
           "PROBABILITIES", "Bf16Attention"]

KEYS = "attention_keys_bf16"
VALUES_T = "attention_values_t_bf16"
PROBABILITIES = "attention_probabilities"
MAX_TILE_ROWS = 16  # rows of a register tile (one accumulator each, 16 queries wide)
PACK = "svtr_bf16_pairs"

# Two rows of 16 fp32 values rounded to bf16 (vcvtne2ps2bf16: to nearest even, the plan's
# rounding) and interleaved into 16 pairs (row 0's value in each pair's low half): a pair
# panel's row. LLVM's intrinsic takes and returns bfloat vectors; the i32 lanes carry the bits.
PACK_IR = f"""
define linkonce_odr <16 x i32> @{PACK}(<16 x float> %first, <16 x float> %second) #0 {{
  %both = call <32 x bfloat> @llvm.x86.avx512bf16.cvtne2ps2bf16.512(<16 x float> %second, <16 x float> %first)
  %halves = bitcast <32 x bfloat> %both to <32 x i16>
  %pairs = shufflevector <32 x i16> %halves, <32 x i16> poison, <32 x i32> <{", ".join(f"i32 {i}, i32 {i + 16}" for i in range(16))}>
  %out = bitcast <32 x i16> %pairs to <16 x i32>
  ret <16 x i32> %out
}}
declare <32 x bfloat> @llvm.x86.avx512bf16.cvtne2ps2bf16.512(<16 x float>, <16 x float>)
attributes #0 = {{ alwaysinline nounwind "target-features"="+avx512bf16,+avx512f,+avx512bw" }}
"""


def rounded_bits(value):
    """The bf16 bits (uint16) of an fp32 ``value`` (a load) rounded to nearest even: the
    expression of the probabilities' block, which ``pack_pairs`` computes with one instruction."""
    from tvm import tirx

    bits = tirx.reinterpret("uint32", value)
    even = (bits >> tirx.const(16, "uint32")) & tirx.const(1, "uint32")
    return ((bits + tirx.const(0x7FFF, "uint32") + even) >> tirx.const(16, "uint32")).astype("uint16")


_REGISTERED: set = set()


def pack_pairs() -> str:
    """The name of a TensorIntrin writing a pair panel's row P[16, 2] (uint16) from two rows of
    fp32 values E[2, 16] (row stride free): P[i, h] = rounded_bits(E[h, i])."""
    name = "svtr_bf16_pack_pairs"
    if name not in _REGISTERED:
        from tvm.s_tir import TensorIntrin
        from tvm.script import tirx as T

        @T.prim_func(s_tir=True)
        def desc(e: T.handle, p: T.handle) -> None:
            se = T.int64()
            E = T.match_buffer(e, (2, 16), "float32", strides=[se, 1], offset_factor=1)
            P = T.match_buffer(p, (16, 2), "uint16", offset_factor=1)
            with T.sblock("root"):
                T.reads(E[0:2, 0:16])
                T.writes(P[0:16, 0:2])
                for i, h in T.grid(16, 2):
                    with T.sblock("pack"):
                        vi, vh = T.axis.remap("SS", [i, h])
                        T.reads(E[vh, vi])
                        T.writes(P[vi, vh])
                        P[vi, vh] = rounded_bits(E[vh, vi])

        @T.prim_func(s_tir=True)
        def impl(e: T.handle, p: T.handle) -> None:
            se = T.int64()
            E = T.match_buffer(e, (2, 16), "float32", strides=[se, 1], offset_factor=1)
            P = T.match_buffer(p, (16, 2), "uint16", offset_factor=1)
            with T.sblock("root"):
                T.reads(E[0:2, 0:16])
                T.writes(P[0:16, 0:2])
                flat = T.decl_buffer((32,), "uint16", data=P.data, elem_offset=P.elem_offset)
                with T.attr(0, "pragma_import_llvm", PACK_IR):
                    flat[T.Ramp(0, 1, 32)] = T.reinterpret(
                        "uint16x32", T.call_extern("int32x16", PACK, E[0, T.Ramp(0, 1, 16)], E[1, T.Ramp(0, 1, 16)]))

        TensorIntrin.register(name, desc, impl, override=True)
        _REGISTERED.add(name)
    return name


class Bf16Attention(CpuRule):
    """The bf16 attention kernel, recognised by its block names; its steps in order: ``task``
    (batch x heads in parallel, query blocks inside), ``values``, ``probabilities``,
    ``softmax``, ``scores``, ``queries``, ``operands`` (consumers before producers, as
    ``compute_at`` requires)."""

    name = "attention-bf16"

    def schedule(self, sch, blocks, target):
        names = {b.name for b in blocks}
        if not {KEYS, VALUES_T, QUERIES, SCORES, MAX, SUM, PROBABILITIES, VALUES, OUT} <= names \
                or not has_bf16_dot_products(target_spec(target)):
            return False
        task, block = self.task(sch, next(b for b in blocks if b.name == OUT))
        values = self.values(sch, block)
        probabilities = self.probabilities(sch, block)
        self.softmax(sch, block, MASKED in names)
        scores = self.scores(sch, block)
        self.queries(sch, block)
        self.operands(sch, task)
        for loop, intrinsic in (values, probabilities, scores):  # last: a tensorized block is opaque to compute_at
            sch.tensorize(loop, intrinsic)
        return True

    # steps

    @staticmethod
    def task(sch, out):
        """The output's loops as (batch, heads, query blocks of 16, queries, columns): batch x
        heads fused into the parallel loop, the columns vectorised. Returns (task, query
        block) loops."""
        others, blocks, cols = query_blocks(sch, out, TILE_COLS)
        task = sch.fuse(*others)
        sch.parallel(task)
        sch.vectorize(cols)
        return task, blocks

    @staticmethod
    def _product(sch, name, block):
        """A product's block under the query block, its output rows in register tiles of
        ``vdpbf16ps`` (one 16-query vector per row), the sums in a local buffer: (the loop to
        tensorize, the intrinsic)."""
        product = sch.get_sblock(name)
        sch.compute_at(product, block, preserve_unit_loops=True)
        rows, _, depth = sch.get_loops(product)[-3:]
        count = int_extent(sch, rows)
        tile = divisor_near(count, MAX_TILE_ROWS)
        _, inner = sch.split(rows, [None, tile])
        sch.set_scope(product, 0, "local")
        return inner, register_intrinsic(tile, 1, int_extent(sch, depth))

    def values(self, sch, block):
        """O^T per query block: tiles of V's columns over all the keys."""
        return self._product(sch, VALUES, block)

    @staticmethod
    def probabilities(sch, block):
        """The exponentials rounded to bf16 as pair panels, two keys' rows (16 queries each) per
        ``pack_pairs``: (the loop to tensorize, the intrinsic)."""
        panels = sch.get_sblock(PROBABILITIES)
        sch.compute_at(panels, block, preserve_unit_loops=True)
        lanes = sch.get_loops(panels)[-2]
        return lanes, pack_pairs()

    @staticmethod
    def softmax(sch, block, masked: bool) -> None:
        """The fp32 kernel's softmax steps (``FusedAttention.softmax``) under the query block."""
        FusedAttention.softmax(sch, block, masked)

    def scores(self, sch, block):
        """S^T per query block: tiles of key rows over the head's depth."""
        return self._product(sch, SCORES, block)

    @staticmethod
    def queries(sch, block) -> None:
        """The block's queries as pair panels, converted once per block."""
        panels = sch.get_sblock(QUERIES)
        sch.compute_at(panels, block, preserve_unit_loops=True)
        lanes, half = sch.get_loops(panels)[-2:]
        sch.vectorize(sch.fuse(lanes, half))

    @staticmethod
    def operands(sch, task) -> None:
        """K's rows and V's transposed rows converted once per batch and head."""
        for name in (VALUES_T, KEYS):
            step = sch.get_sblock(name)
            sch.compute_at(step, task, preserve_unit_loops=True)
            sch.vectorize(sch.get_loops(step)[-1])
