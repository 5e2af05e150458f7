"""Register-tiled reductions: GEMM, batch matmul, convolutions, pooling.

A kernel qualifies when its one reduction block iterates spatial axes first and reduction
axes after (S...SR...R), and injective blocks at most come before it (padding) and after it
(bias, activation, casts). The output's last spatial axis (j) is vectorised, the one before
it (i) is unrolled into a small block of rows, and the reduction runs between the tile loops
and the register tile, so every partial sum of an mr x nr tile lives in vector registers for
the whole reduction. Everything outside the tile is fused into one parallel loop.
"""
from __future__ import annotations

import re

from tvm.s_tir.dlight.analysis import normalize_prim_func

from .common import CpuShape, divisor_near, int_extent, read_vars, vector_factor, vectorise_nest
from .rule import CpuRule


# Panels of the reused operand from this size on are packed: beyond the L1 data cache,
# its strided rows evict each other; below it, packing costs more than it saves.
PANEL_BYTES = 48 * 1024
# Output rows computed against each packed panel: enough to pay for the copy many times over.
PANEL_ROWS = 48
# Output widths up to this many vectors are one register tile wide.
WHOLE_ROW_VECTORS = 4


class TiledContraction(CpuRule):
    """``broadcast_operand``: only kernels that read an operand independent of j (GEMM's A,
    a convolution's input across output channels), i.e. real contractions; without it any
    S..SR..R reduction qualifies (pooling), and no row block is kept (nothing is reused)."""

    def __init__(self, broadcast_operand: bool = True):
        self.broadcast_operand = broadcast_operand
        self.name = "contraction" if broadcast_operand else "tiled-reduction"

    def schedule(self, sch, blocks, target):
        reductions = [b for b in blocks if not b.is_injective()]
        if len(reductions) != 1:
            return False
        main = reductions[0]
        kinds = main.dom_kind()
        if not re.fullmatch(r"S+R+", kinds) or kinds.count("S") < (2 if self.broadcast_operand else 1):
            return False
        stmt = sch.get(main.block_rv)
        spatial = [it for it in main.iters if it.kind == "S"]
        reduce = [it for it in main.iters if it.kind == "R"]
        if self.broadcast_operand and all(spatial[-1].var.name in used for used in read_vars(stmt)):
            return False
        shape = CpuShape.of(target)
        lanes = shape.lanes(stmt.writes[0].source.dtype.bits)
        width = int_extent(sch, spatial[-1].loop_rv)
        copies = set()
        step = 2 * lanes if width is not None and width > 2 * lanes else lanes
        if self.broadcast_operand and width is not None and width > lanes and width % step:
            # Odd row widths (attention over 100 or 50 tokens) as odd vector widths run at a
            # fraction of the speed of whole vectors: pad j to whole vectors instead (zeros in,
            # padded columns dropped on the way out). Only pure einsums can be padded.
            try:
                sch.pad_einsum(main.block_rv, [1] * (len(spatial) - 1) + [step] + [1] * len(reduce))
            except Exception:
                pass
            else:
                known = {b.name for b in blocks}
                blocks = normalize_prim_func(sch)
                if blocks is None:
                    return False
                main = next(b for b in blocks if not b.is_injective())
                spatial = [it for it in main.iters if it.kind == "S"]
                reduce = [it for it in main.iters if it.kind == "R"]
                copies = {b.name for b in blocks} - known
        index = blocks.index(main)
        before, after = blocks[:index], blocks[index + 1:]
        if not all(b.is_injective() for b in before + after):
            return False
        windows = []
        for block in before:
            if block.name in copies:  # a padded copy: its own pass before the product
                vectorise_nest(sch, block.block_rv, target)
            elif _is_conditional(sch, block.block_rv) and _feeds_vectors(sch, block, main, spatial):
                # Zero padding read along j: inlined, its bounds test would sit in every
                # vector lane and stop vectorisation; computed per tile it fills a small
                # window the vector loads then read unconditionally.
                windows.append(block.block_rv)
            else:
                sch.compute_inline(block.block_rv)
        for block in after[:-1]:
            sch.compute_inline(block.block_rv)

        loops = [it.loop_rv for it in main.iters]
        extents = [int_extent(sch, loop) for loop in loops]
        if None in extents:
            return False
        s_loops, r_loops = loops[:len(spatial)], loops[len(spatial):]

        nr = register_tile_width(extents[len(spatial) - 1], lanes) if self.broadcast_operand \
            else vector_factor(extents[len(spatial) - 1], lanes)
        jo, ji = sch.split(s_loops[-1], [None, nr])
        if self.broadcast_operand:
            row = _row_axis(spatial, read_vars(sch.get(main.block_rv)))
            vectors = -(-nr // lanes)
            # accumulators + one operand load per vector + the broadcast scalar
            rows = max(1, min(8, (shape.vector_registers - vectors - 1) // vectors))
            mr = divisor_near(extents[row], rows)
            io, ii = sch.split(s_loops[row], [None, mr])
            outer_spatial = [loop for n, loop in enumerate(s_loops[:-1]) if n != row]
            tile_inner = [ii, ji]
            panel = _reused_operand(sch, main, spatial, row)
            if panel is not None and _extent(sch, r_loops) * nr * stmt.reads[panel].source.dtype.bits // 8 < PANEL_BYTES:
                panel = None  # small enough to stay cached where it lies
            if panel is not None and in_panels(stmt.reads[panel].source, extents[len(spatial) - 1], nr):
                panel = None  # laid out in panels at build time (relax_passes.pack_matmul_weights)
            keep = None if panel is None else _outside_panel(sch, outer_spatial, jo, _extent(sch, [io]) * mr,
                                                              4 * _cores(target))
            if keep is not None:
                # j-tiles outside i-tiles, the reused operand's K x nr panel copied once per
                # j-tile into contiguous memory: read in place, its rows lie a whole row
                # length apart and collide in a few L1 sets; packed, the panel stays in L1
                # while every row block streams past it. Outer axes go inside the j-tile
                # until a panel serves PANEL_ROWS rows (a convolution over a 2x4 map
                # would otherwise pack its whole panel for a single row tile).
                sch.reorder(*outer_spatial[:keep], jo, *outer_spatial[keep:], io, *r_loops, ii, ji)
                tile = sch.fuse(*outer_spatial[:keep], jo)
                sch.parallel(tile)
                packed = sch.cache_read(main.block_rv, panel, "global")
                sch.compute_at(packed, tile, preserve_unit_loops=True)
                inner = sch.get_loops(packed)[-1]
                if (int_extent(sch, inner) or 1) > 1:
                    sch.vectorize(inner)
                anchor = io
            else:
                sch.reorder(*outer_spatial, jo, io, *r_loops, ii, ji)
                tile = anchor = sch.fuse(*outer_spatial, jo, io)
                sch.parallel(tile)
        else:
            outer_spatial = s_loops[:-1]
            sch.reorder(*outer_spatial, jo, *r_loops, ji)
            tile_inner = [ji]
            tile = anchor = sch.fuse(*outer_spatial, jo)
            sch.parallel(tile)
        for window in windows:
            sch.compute_at(window, anchor, preserve_unit_loops=True)

        if after:
            sch.reverse_compute_at(after[-1].block_rv, anchor, preserve_unit_loops=True)
            epilogue = after[-1].block_rv
        else:
            epilogue = sch.cache_write(main.block_rv, 0, "global")
            sch.reverse_compute_at(epilogue, anchor, preserve_unit_loops=True)
        init = sch.decompose_reduction(main.block_rv, r_loops[0])
        for block in (init, epilogue):
            inner = sch.get_loops(block)[-1]
            if (int_extent(sch, inner) or 1) > 1:
                sch.vectorize(inner)
        if len(tile_inner) == 2 and (int_extent(sch, tile_inner[0]) or 1) > 1:
            sch.unroll(tile_inner[0])
        if nr > 1:
            sch.vectorize(tile_inner[-1])
        return True


def register_tile_width(width: int, lanes: int) -> int:
    """The register tile's width (nr) for a contraction's output rows of ``width``: up to two
    whole vectors (``vector_factor``), or the whole row when it is at most WHOLE_ROW_VECTORS
    vectors (attention's value product, 32 wide: split in two, every row of the broadcast
    operand would be read and broadcast twice)."""
    if width % lanes == 0 and width <= WHOLE_ROW_VECTORS * lanes:
        return width
    return vector_factor(width, lanes)


def in_panels(buffer, width: int, nr: int) -> bool:
    """Is ``buffer`` a reused operand already laid out as [width / nr, K, nr] panels, each
    register tile's K x nr panel contiguous (``relax_passes.pack_matmul_weights``)?"""
    shape = [int(d) for d in buffer.shape]
    return len(shape) == 3 and shape[2] == nr and shape[0] * nr == width


def _row_axis(spatial, reads) -> int:
    """The spatial axis to unroll into rows of the register tile: the innermost one that the
    j-varying operand does not depend on, so each vector of it loaded is reused across the
    rows (GEMM: i; NCHW convolution: output channels; NHWC: output width). Without such an
    axis (depthwise convolution) the one just outside j."""
    j = spatial[-1].var.name
    vector_reads = [used for used in reads if j in used]
    for index in range(len(spatial) - 2, -1, -1):
        if all(spatial[index].var.name not in used for used in vector_reads):
            return index
    return len(spatial) - 2


def _is_conditional(sch, block) -> bool:
    return "if_then_else" in str(sch.get(block).body)


def _feeds_vectors(sch, producer, main, spatial) -> bool:
    """Does ``main`` read ``producer``'s output at an index that moves with j?"""
    written = sch.get(producer.block_rv).writes[0].source.same_as
    j = spatial[-1].var.name
    stmt = sch.get(main.block_rv)
    return any(written(region.source) and j in used for region, used in zip(stmt.reads, read_vars(stmt)))


def _outside_panel(sch, outer, jo, rows_per_tile: int, tasks: int) -> int | None:
    """How many of the ``outer`` spatial loops stay outside the j-tile loop when the reused
    operand is packed per parallel task: as many as leave at least PANEL_ROWS output rows per
    packed panel, then more if the tasks would not feed every core; None when even all of
    them give too few tasks (no packing then)."""
    extents = [int_extent(sch, loop) or 1 for loop in outer]
    keep = 0
    for count in range(len(outer), -1, -1):
        inner = rows_per_tile
        for extent in extents[count:]:
            inner *= extent
        if inner >= PANEL_ROWS:
            keep = count
            break
    while _extent(sch, outer[:keep] + [jo]) < tasks:
        if keep == len(outer):
            return None
        keep += 1
    return keep


def _reused_operand(sch, main, spatial, row: int) -> int | None:
    """The read that moves with j but not with the row axis (GEMM's B, an NHWC convolution's
    weights): the operand every row of the register tile reuses."""
    j, i = spatial[-1].var.name, spatial[row].var.name
    for index, used in enumerate(read_vars(sch.get(main.block_rv))):
        if j in used and i not in used:
            return index
    return None


def _extent(sch, loops) -> int:
    total = 1
    for loop in loops:
        total *= int_extent(sch, loop) or 1
    return total


def _cores(target) -> int:
    cores = target.attrs.get("num-cores")
    return int(cores) if cores else 1
