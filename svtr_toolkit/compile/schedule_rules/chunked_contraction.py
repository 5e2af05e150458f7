"""The K-chunked fp16 matmul (``compile.fp16_accumulate``): fp16 register tile, fp32 sum per chunk.

The kernel has two reduction blocks: ``chunk_partial`` (fp16 sums of ``chunk`` products)
and ``chunk_sum`` (their fp32 sum over chunks), with injective blocks at most before it
(casts, transposes) and after it (cast, bias). Scheduled as one register-tiled GEMM: an
mr x nr output tile per parallel task; for each chunk, the tile's fp16 partial sums live in
vector registers for the chunk's ``chunk`` products (one fp16 vector FMA per product
vector: ``vfmadd231ph`` on avx512_fp16), then are widened and added to the fp32 tile once.
So the fp32 work is one convert and one add per output vector per chunk, not per product.
"""
from __future__ import annotations

from ..fp16_accumulate import PARTIAL_BLOCK, SUM_BLOCK
from .common import CpuModel, divisor_near, int_extent, vector_factor, vectorise_nest
from .rule import CpuRule


class ChunkedContraction(CpuRule):
    name = "chunked-contraction"

    def schedule(self, sch, blocks, target):
        names = [b.name for b in blocks]
        part = [i for i, name in enumerate(names) if name.startswith(PARTIAL_BLOCK)]
        total = [i for i, name in enumerate(names) if name.startswith(SUM_BLOCK)]
        if len(part) != 1 or total != [part[0] + 1]:
            return False
        part, total = blocks[part[0]], blocks[total[0]]
        before, after = blocks[:blocks.index(part)], blocks[blocks.index(total) + 1:]
        if not all(b.is_injective() for b in before + after):
            return False
        kinds = total.dom_kind()  # S..S R, or all S when there is one chunk (no promotion)
        if "R" in kinds[:-1]:
            return False
        for block in before:
            try:
                sch.compute_inline(block.block_rv)
            except Exception:  # e.g. a transpose it cannot inline: its own vectorised pass
                vectorise_nest(sch, block.block_rv, target)
        for block in after[:-1]:
            sch.compute_inline(block.block_rv)

        loops = [it.loop_rv for it in total.iters]
        extents = [int_extent(sch, loop) for loop in loops]
        chunked = kinds.endswith("R")
        if None in extents or len(loops) < 2 + chunked:
            return False
        if chunked:
            *outer, i_loop, j_loop, c_loop = loops
        else:
            (*outer, i_loop, j_loop), c_loop = loops, None
        shape = CpuModel.of(target)
        lanes = shape.lanes(16)  # the fp16 accumulators decide the tile
        nr = vector_factor(extents[len(outer) + 1], lanes)
        vectors = -(-nr // lanes)
        rows = max(1, min(8, (shape.vector_registers - vectors - 1) // vectors))
        mr = divisor_near(extents[len(outer)], rows)
        jo, ji = sch.split(j_loop, [None, nr])
        io, ii = sch.split(i_loop, [None, mr])
        sch.reorder(*outer, jo, io, *([c_loop] if chunked else []), ii, ji)
        tile = sch.fuse(*outer, jo, io)
        sch.parallel(tile)

        # the chunk's fp16 partial sums: computed per chunk for the tile, in registers
        sch.compute_at(part.block_rv, c_loop if chunked else tile, preserve_unit_loops=True)
        sch.set_scope(part.block_rv, 0, "local")
        p_ii, p_ji, r_loop = _tile_loops(sch, part.block_rv)
        sch.reorder(r_loop, p_ii, p_ji)
        p_init = sch.decompose_reduction(part.block_rv, r_loop)
        inits = [p_init]
        if chunked:
            inits.append(sch.decompose_reduction(total.block_rv, c_loop))

        if after:
            sch.reverse_compute_at(after[-1].block_rv, tile, preserve_unit_loops=True)
            _vectorise_inner(sch, after[-1].block_rv)
        for block in inits:
            _vectorise_inner(sch, block)
        if (int_extent(sch, p_ii) or 1) > 1:
            sch.unroll(p_ii)
        if nr > 1:
            sch.vectorize(p_ji)
            sch.vectorize(ji)
        return True


def _tile_loops(sch, block):
    """The loops of ``block`` (computed at a tile) over the output's i and j, and its
    reduction loop: compute_at gives it one loop per block variable, in their order; i and
    j are the variables of the written buffer's [..., i, j, chunk] indices."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)[-len(stmt.iter_vars):]
    names = [iv.var.name for iv in stmt.iter_vars]
    region = stmt.writes[0].region
    i, j = (names.index(region[axis].min.name) for axis in (-3, -2))
    reduce = [n for n, iv in enumerate(stmt.iter_vars) if iv.iter_type == 2]  # CommReduce
    if len(reduce) != 1:
        raise ValueError("one reduction loop expected")
    return loops[i], loops[j], loops[reduce[0]]


def _vectorise_inner(sch, block):
    inner = sch.get_loops(block)[-1]
    if (int_extent(sch, inner) or 1) > 1:
        sch.vectorize(inner)
