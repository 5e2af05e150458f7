"""Attention in one kernel: softmax(Q K^T + mask) V, as ``relax_passes.fused_attention`` builds it.

The kernel computes the scores transposed, S^T [keys, queries], for a block of queries one
vector wide, so every step reads whole vectors or broadcasts a scalar:

- ``attention_queries``: the block's queries transposed, [d, queries] (a query past the last
  repeats the last one, so the padded lanes hold ordinary finite values);
- ``attention_scores``: S^T = K Q^T, a register tile of key rows x one vector of queries, each
  key element broadcast to the tile (an FMA with a broadcast operand);
- ``attention_masked`` (with a mask): S^T + mask^T, inlined into its readers;
- ``attention_max``, ``T_fast_exp`` (TVM's fast_exp of the shifted scores, as the fast
  softmax it replaces), ``attention_sum``: the softmax down the key axis, elementwise across the
  query vector (no horizontal reductions);
- ``attention_values``: O = exp(S) V, a register tile of the block's queries x one vector of
  V's columns, each exp(S) value broadcast;
- ``attention_out``: O divided by the sums.

Why: apart, the three kernels write and read the whole [heads, queries, keys] score tensor three
times (SVTR's first stage: 10 MB per layer at batch 32, out of cache) and the score product has
a reduction of 32 terms per output, too short to amortise a register tile's stores; here a
block's scores stay in the L1 cache between the steps.
"""
from __future__ import annotations

from .common import CpuModel, divisor_near, int_extent, vector_factor
from .rule import CpuRule

QUERIES = "attention_queries"
SCORES = "attention_scores"
MASKED = "attention_masked"
MAX = "attention_max"
DELTA = "attention_delta"
EXP = "T_fast_exp"  # the name TVM's topi.fast_exp gives its block
SUM = "attention_sum"
VALUES = "attention_values"
OUT = "attention_out"


def query_block(model: CpuModel) -> int:
    """Queries per parallel task: one machine vector of fp32 (16 on AVX-512, 8 on AVX2)."""
    return model.lanes(32)


def query_blocks(sch, out, queries: int):
    """The output block's query axis (the one its division by the sums indexes them with) split
    in blocks of ``queries``, the last block partial (the output has the real queries only), and
    its loops ordered (other axes, query blocks, queries, V's columns): returns (the other axes'
    loops, the query blocks' loop, the columns' loop)."""
    from tvm.tirx.analysis import undefined_vars

    stmt = sch.get(out.block_rv)
    sums = next(region for region in stmt.reads if region.source.name == SUM)
    query = {var.name for var in undefined_vars(sums.region[-1].min)}
    *loops, cols = [it.loop_rv for it in out.iters]
    rows = next(it.loop_rv for it in out.iters if it.var.name in query)
    loops = [loop for loop in loops if not sch.get(loop).same_as(sch.get(rows))]
    outer, inner = sch.split(rows, [None, queries])
    sch.reorder(*loops, outer, inner, cols)
    return loops, outer, cols


class FusedAttention(CpuRule):
    """The fused attention kernel, recognised by its block names; its steps in order: ``task``
    (one parallel loop over heads x query blocks, every block computed under it), ``values``,
    ``softmax``, ``scores``, ``queries`` (consumers placed before their producers, as
    ``compute_at`` requires)."""

    name = "attention"

    def schedule(self, sch, blocks, target):
        names = {b.name for b in blocks}
        if not {QUERIES, SCORES, MAX, SUM, VALUES, OUT} <= names:
            return False
        model = CpuModel.of(target)
        task = self.task(sch, next(b for b in blocks if b.name == OUT), query_block(model))
        self.values(sch, task, model)
        self.softmax(sch, task, MASKED in names)
        self.scores(sch, task, model)
        self.queries(sch, task)
        return True

    # steps

    @staticmethod
    def task(sch, out, queries: int):
        """The output's query blocks and the other axes but V's columns (batch, heads) fused
        into one parallel loop (``query_blocks``); V's columns vectorised."""
        others, blocks, cols = query_blocks(sch, out, queries)
        task = sch.fuse(*others, blocks)
        sch.parallel(task)
        sch.vectorize(cols)
        return task

    @staticmethod
    def values(sch, task, model: CpuModel) -> None:
        """O per task: for each vector of V's columns, a register tile of the block's queries
        (one accumulator each) over every key; each exp(S) value broadcast."""
        block = sch.get_sblock(VALUES)
        sch.compute_at(block, task, preserve_unit_loops=True)
        rows, cols, keys = sch.get_loops(block)[-3:]
        width = int_extent(sch, cols)
        col_outer, col_inner = sch.split(cols, [None, vector_factor(width, model.lanes(32), 1)])
        sch.reorder(col_outer, keys, rows, col_inner)
        sch.decompose_reduction(block, keys)
        sch.unroll(rows)
        sch.vectorize(col_inner)

    @staticmethod
    def softmax(sch, task, masked: bool) -> None:
        """The sums, the exponentials and the maxima down the key axis, each a pass over the
        block's scores with the query vector innermost; the mask and the shift inlined."""
        sch.compute_inline(sch.get_sblock(DELTA))
        if masked:
            sch.compute_inline(sch.get_sblock(MASKED))
        for name in (SUM, EXP, MAX):
            block = sch.get_sblock(name)
            sch.compute_at(block, task, preserve_unit_loops=True)
            loops = sch.get_loops(block)
            if name == EXP:
                sch.vectorize(loops[-1])
                continue
            queries, keys = loops[-2:]
            sch.reorder(keys, queries)
            sch.decompose_reduction(block, keys)
            sch.vectorize(queries)

    @staticmethod
    def scores(sch, task, model: CpuModel) -> None:
        """S^T per task: register tiles of key rows (as many as the accumulators allow, a divisor
        of the keys) x the query vector, over the head dimension."""
        block = sch.get_sblock(SCORES)
        sch.compute_at(block, task, preserve_unit_loops=True)
        keys, queries, depth = sch.get_loops(block)[-3:]
        rows = divisor_near(int_extent(sch, keys), model.accumulators)
        key_outer, key_inner = sch.split(keys, [None, rows])
        sch.reorder(key_outer, depth, key_inner, queries)
        sch.decompose_reduction(block, depth)
        sch.unroll(key_inner)
        sch.vectorize(queries)

    @staticmethod
    def queries(sch, task) -> None:
        """The block's queries transposed once per task."""
        block = sch.get_sblock(QUERIES)
        sch.compute_at(block, task, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(block)[-1])
