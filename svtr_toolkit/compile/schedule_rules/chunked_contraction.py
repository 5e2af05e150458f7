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

from tvm.s_tir import ScheduleError

from ..fp16_accumulate import CONVERT_BLOCK, PARTIAL_BLOCK, SUM_BLOCK
from .common import CpuModel, divisor_near, int_extent, vectorise_nest, vectorise_whole
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
        conversions = [b for b in before if b.name.startswith(CONVERT_BLOCK)]
        for block in before:
            if block in conversions:
                continue  # computed once per row tile below
            try:
                sch.compute_inline(block.block_rv)
            except ScheduleError:  # e.g. a transpose it cannot inline: its own vectorised pass
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
        model = CpuModel.of(target)
        lanes = model.lanes(16)  # the fp16 accumulators decide the tile
        nr = tile_width(extents[len(outer) + 1], model)
        mr = divisor_near(extents[len(outer)], model.tile_rows(-(-nr // lanes)))
        jo, ji = sch.split(j_loop, [None, nr])
        io, ii = sch.split(i_loop, [None, mr])
        # row tiles outside the column tiles: a row tile's activations, converted to fp16 once,
        # serve every column tile (inlined, each would be converted again at every use)
        sch.reorder(*outer, io, jo, *([c_loop] if chunked else []), ii, ji)
        rows = sch.fuse(*outer, io)
        sch.parallel(rows)
        tile = jo

        # the chunk's fp16 partial sums: computed per chunk for the tile, in registers
        sch.compute_at(part.block_rv, c_loop if chunked else tile, preserve_unit_loops=True)
        sch.set_scope(part.block_rv, 0, "local")
        p_ii, p_ji, r_loop = _tile_loops(sch, part.block_rv)
        sch.reorder(r_loop, p_ii, p_ji)
        for block in conversions:  # after its consumer is under the row tile
            sch.compute_at(block.block_rv, rows, preserve_unit_loops=True)
            _vectorise_inner(sch, block.block_rv, lanes)
        p_init = sch.decompose_reduction(part.block_rv, r_loop)
        inits = [p_init]
        if chunked:
            inits.append(sch.decompose_reduction(total.block_rv, c_loop))

        if after:
            sch.reverse_compute_at(after[-1].block_rv, tile, preserve_unit_loops=True)
            _vectorise_inner(sch, after[-1].block_rv, lanes)
        for block in inits:
            _vectorise_inner(sch, block, lanes)
        if (int_extent(sch, p_ii) or 1) > 1:
            sch.unroll(p_ii)
        if nr > 1:
            vectorise_whole(sch, p_ji, lanes)
            vectorise_whole(sch, ji, lanes)
        return True


def tile_width(width: int, model: CpuModel) -> int:
    """The register tile's width for fp16 output rows of ``width``: as the fp32 contraction's
    (``contraction.register_tile_width``) in fp16 lanes (``relax_passes.fp16_matmuls`` packs
    weight panels this wide)."""
    from .contraction import register_tile_width

    return register_tile_width(width, model, 16)


def _tile_loops(sch, block):
    """The loops of ``block`` (computed at a tile) over the output's i and j, and its
    reduction loop: compute_at gives it one loop per block variable, in their order; i and
    j are the variables of the written buffer's [..., i, j, chunk] indices."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)[-len(stmt.iter_vars):]
    names = [iv.var.name for iv in stmt.iter_vars]
    region = stmt.writes[0].region
    if not all(hasattr(region[axis].min, "name") for axis in (-3, -2)):
        raise ValueError("the partial sums' rows or columns are not loops")
    i, j = (names.index(region[axis].min.name) for axis in (-3, -2))
    reduce = [n for n, iv in enumerate(stmt.iter_vars) if iv.iter_type == 2]  # CommReduce
    if len(reduce) != 1:
        raise ValueError("one reduction loop expected")
    return loops[i], loops[j], loops[reduce[0]]


def _vectorise_inner(sch, block, lanes: int):
    vectorise_whole(sch, sch.get_loops(block)[-1], lanes)
