"""Row reductions followed by elementwise work (softmax, layer-norm statistics)."""
from __future__ import annotations

from .common import CpuModel, int_extent, value_bits, vector_factor
from .rule import CpuRule


class RowReduction(CpuRule):
    """Kernels made of row reductions over the last axis and elementwise blocks on the same
    rows: each row is computed whole under one parallel loop over the rows, every block's
    row axis vectorised - reductions too, as vector partial results (``rfactor``) reduced
    across lanes at the end of the row.

    Why not TVM dlight's CPU ``Reduction`` as is: it leaves reductions scalar (one dependent
    add per element: latency-bound), and splits rows into whole vectors with a bounds test
    (rows of 50, 100, 200), which makes TVM's vectoriser scalarise the guarded blocks -
    softmax's exponential included. Here the row is split by a divisor that fills the
    vectors best (``vector_factor``), so no block needs a guard. Kernels outside this shape
    still go to dlight's rule.
    """

    name = "row-reduction"

    def apply(self, func, target):
        sch = super().apply(func, target)
        if sch is not None:
            return sch
        from tvm.s_tir.dlight.cpu import Reduction

        try:
            return Reduction().apply(func, target, False)
        except Exception:
            return None

    def schedule(self, sch, blocks, target):
        final = blocks[-1]
        if not final.is_injective():
            return False
        reductions = [b for b in blocks if not b.is_injective()]
        if not reductions:
            return False
        row_extents = [int_extent(sch, loop) for loop in sch.get_loops(final.block_rv)]
        if len(row_extents) < 2 or None in row_extents:
            return False
        rows, width = row_extents[:-1], row_extents[-1]
        for block in blocks:
            kinds = block.dom_kind()
            extents = [int_extent(sch, loop) for loop in sch.get_loops(block.block_rv)]
            if block.is_injective():
                if extents not in (row_extents, rows):  # a whole row, or one value per row
                    return False
            elif kinds != "S" * len(rows) + "R" or extents != rows + [width]:
                return False
        lanes = CpuModel.of(target).lanes(value_bits(sch.get(final.block_rv)))
        vf = vector_factor(width, lanes)

        # Elementwise blocks with one consumer are inlined into it; one read twice (softmax's
        # exponential: by the sum and by the normalisation) keeps a row-sized buffer, so it
        # is computed once.
        for block in blocks[:-1]:
            if block.is_injective() and len(sch.get_consumers(block.block_rv)) == 1:
                sch.compute_inline(block.block_rv)
        partials = []
        for block in reductions:
            loop = sch.get_loops(block.block_rv)[-1]
            if vf > 1:
                _, inner = sch.split(loop, [None, vf])
                partials.append(sch.rfactor(inner, 0))

        # One parallel loop over all rows (each thread a contiguous run of them), every
        # other block computed per row under it.
        loops = sch.get_loops(final.block_rv)
        row = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        sch.parallel(row)
        root = sch.get_sblock("root")
        final_name = sch.get(final.block_rv).name_hint
        producers = [b for b in sch.get_child_blocks(root) if sch.get(b).name_hint != final_name]
        for block in reversed(producers):
            sch.compute_at(block, row, preserve_unit_loops=False)
        if vf > 1:
            _, inner = sch.split(sch.get_loops(final.block_rv)[-1], [None, vf])
            sch.vectorize(inner)
        names = {sch.get(p).name_hint for p in partials}
        for block in sch.get_child_blocks(row):
            stmt = sch.get(block)
            if stmt.name_hint == final_name:
                continue
            if stmt.name_hint in names:
                # compute_at re-creates the loops in block-iter order, rfactor's lane axis
                # first: (lanes, k outer) -> (k outer, lanes), partials initialised before
                lane, outer = sch.get_loops(block)[-2:]
                sch.reorder(outer, lane)
                init = sch.decompose_reduction(block, outer)
                sch.vectorize(lane)
                sch.vectorize(sch.get_loops(init)[-1])
            elif not _is_reduction(stmt) and vf > 1 and len(sch.get_loops(block)) > 1:
                # a row-long elementwise block kept for two readers (a per-row value has no
                # loop of its own under the row loop)
                _, vec = sch.split(sch.get_loops(block)[-1], [None, vf])
                sch.vectorize(vec)
        return True


def _is_reduction(stmt) -> bool:
    return any(int(iv.iter_type) == 2 for iv in stmt.iter_vars)
