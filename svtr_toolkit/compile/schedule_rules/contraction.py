"""Register-tiled reductions: GEMM, batch matmul, convolutions, pooling.

A kernel qualifies when its one reduction block iterates spatial axes first and reduction
axes after (S...SR...R), and injective blocks at most come before it (padding) and after it
(bias, activation, casts). The output's last spatial axis (j) is vectorised, the one before
it (i) is unrolled into a small block of rows, and the reduction runs between the tile loops
and the register tile, so every partial sum of an mr x nr tile lives in vector registers for
the whole reduction. Everything outside the tile is fused into one parallel loop.

The steps, in order: ``match`` (the kernel's shape), ``pad`` (odd row widths to whole
vectors), ``producers`` (padding inlined or computed per tile), ``tile`` (the register tile
and the loop order), ``pack`` (the reused operand copied into panels at run time, where it
was not laid out in panels at build time), ``epilogue`` (bias and activation per tile).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from tvm.s_tir.dlight.analysis import normalize_prim_func

from .common import CpuModel, divisor_near, int_extent, read_vars, vector_factor, vectorise_nest, vectorise_whole
from .rule import CpuRule


# Panels of the reused operand from this size on are packed: beyond the L1 data cache,
# its strided rows evict each other; below it, packing costs more than it saves.
PANEL_BYTES = 48 * 1024
# Output rows computed against each packed panel: enough to pay for the copy many times over.
PANEL_ROWS = 48
# Output widths up to this many vectors are one register tile wide.
WHOLE_ROW_VECTORS = 4
# A reused operand's panel beyond this is read in reduction blocks of this size, each staying
# in the L1 data cache (48 KiB on current x86 cores) while every row tile passes over it.
PANEL_L1_BYTES = 24 * 1024
# A reduction shorter than this many terms (a 3-channel image's convolution: 27; SVTR's
# 64-channel products) does too little work per register tile to amortise allocating its
# partial sums from TVM's workspace pool, which TVM does per task for a buffer of STACK_BYTES or
# more (a smaller one lives on the stack, where LLVM keeps it in registers): such tiles get
# fewer rows instead. At 128 terms the fuller tile is worth the allocation again.
SHORT_REDUCTION = 96
STACK_BYTES = 1024
# Rows of the broadcast operand one task keeps while every j-tile passes over them: the block
# stays in the L2 cache instead of being streamed from memory once per j-tile.
ROW_BLOCK_BYTES = 256 * 1024


@dataclass
class _Kernel:
    """The blocks of a matched kernel: the reduction ``main``, its spatial and reduction
    iterators, and the blocks ``pad`` added (padded copies)."""

    blocks: list
    main: object
    spatial: list
    reduce: list
    copies: set = field(default_factory=set)

    @property
    def before(self):
        return self.blocks[:self.blocks.index(self.main)]

    @property
    def after(self):
        return self.blocks[self.blocks.index(self.main) + 1:]


@dataclass
class _Tile:
    anchor: object  # the loop the epilogue and the padding windows are computed under
    inner: list  # the register tile's loops: [rows..., j] (or [j] for plain reductions)
    nr: int
    lanes: int
    reduction: object  # the outermost reduction loop: the partial sums are zeroed before it


class TiledContraction(CpuRule):
    """``broadcast_operand``: only kernels that read an operand independent of j (GEMM's A,
    a convolution's input across output channels), i.e. real contractions; without it an
    S..SR..R reduction whose reads all move with j in their innermost index qualifies (pooling;
    channels-last means over the spatial axes, vectors along the channels) - not a reduction
    along the rows (layer-norm statistics) - and no row block is kept (nothing is reused)."""

    def __init__(self, broadcast_operand: bool = True):
        self.broadcast_operand = broadcast_operand
        self.name = "contraction" if broadcast_operand else "tiled-reduction"

    def schedule(self, sch, blocks, target):
        kernel = self.match(sch, blocks)
        if kernel is None:
            return False
        kernel = self.pad(sch, kernel, target)
        if kernel is None:
            return False
        windows = self.producers(sch, kernel, target)
        tile = self.tile(sch, kernel, target)
        if tile is None:
            return False
        self.epilogue(sch, kernel, tile, windows)
        return True

    # steps

    def match(self, sch, blocks) -> _Kernel | None:
        """One reduction block, S..SR..R, injective blocks around it; with
        ``broadcast_operand``, a read that does not move with j."""
        reductions = [b for b in blocks if not b.is_injective()]
        if len(reductions) != 1:
            return None
        main = reductions[0]
        kinds = main.dom_kind()
        if not re.fullmatch(r"S+R+", kinds):
            return None
        kernel = _Kernel(blocks, main, [it for it in main.iters if it.kind == "S"],
                         [it for it in main.iters if it.kind == "R"])
        stmt = sch.get(main.block_rv)
        j = kernel.spatial[-1].var.name
        if self.broadcast_operand and all(j in used for used in read_vars(stmt)):
            return None
        if not self.broadcast_operand and not all(_innermost_index_moves_with(region, j) for region in stmt.reads):
            return None  # j would not be contiguous in the reads: a row reduction, not this
        return kernel

    def pad(self, sch, kernel: _Kernel, target) -> _Kernel | None:
        """Odd row widths (attention over 100 or 50 tokens) as odd vector widths run at a
        fraction of the speed of whole vectors: j is padded to whole vectors instead (zeros
        in, padded columns dropped on the way out). Only pure einsums can be padded."""
        lanes = CpuModel.of(target).lanes(sch.get(kernel.main.block_rv).writes[0].source.dtype.bits)
        width = int_extent(sch, kernel.spatial[-1].loop_rv)
        step = 2 * lanes if width is not None and width > 2 * lanes else lanes
        if self.broadcast_operand and width is not None and width > lanes and width % step:
            factors = [1] * (len(kernel.spatial) - 1) + [step] + [1] * len(kernel.reduce)
            try:
                sch.pad_einsum(kernel.main.block_rv, factors)
            except _schedule_errors():
                pass  # not a pure einsum: left at its odd width
            else:
                known = {b.name for b in kernel.blocks}
                blocks = normalize_prim_func(sch)
                if blocks is None:
                    return None
                main = next(b for b in blocks if not b.is_injective())
                kernel = _Kernel(blocks, main, [it for it in main.iters if it.kind == "S"],
                                 [it for it in main.iters if it.kind == "R"], {b.name for b in blocks} - known)
        if not all(b.is_injective() for b in kernel.before + kernel.after):
            return None
        return kernel

    @staticmethod
    def producers(sch, kernel: _Kernel, target) -> list:
        """Blocks before the reduction: padded copies get their own vectorised pass; zero
        padding read along j is computed per tile (returned, placed by ``tile``): inlined,
        its bounds test would sit in every vector lane and stop vectorisation; other zero
        padding (a channels-last convolution's window) gets its own vectorised pass too:
        inlined, its bounds test is a branch at every tap of the register tile, which kept the
        partial sums out of registers (the stride-2 merges of SVTR ran at half the speed); the
        rest is inlined. The epilogue's blocks are inlined into its last one."""
        windows = []
        for block in kernel.before:
            if block.name in kernel.copies:
                vectorise_nest(sch, block.block_rv, target)
            elif _is_conditional(sch, block.block_rv) and _feeds_vectors(sch, block, kernel.main, kernel.spatial):
                windows.append(block.block_rv)
            elif _is_conditional(sch, block.block_rv):
                vectorise_nest(sch, block.block_rv, target)
            else:
                sch.compute_inline(block.block_rv)
        for block in kernel.after[:-1]:
            sch.compute_inline(block.block_rv)
        return windows

    def tile(self, sch, kernel: _Kernel, target) -> _Tile | None:
        """The register tile (``CpuModel.tile_vectors`` / ``tile_rows``, its rows along
        ``_free_axes``; fewer rows over a short reduction, ``_rows_on_the_stack``; a second row
        axis where the first is too short, ``_second_row_axis``) and the loops around it, fused
        into one parallel loop: j-tiles inside row blocks of ROW_BLOCK_BYTES, so the
        broadcast operand is read from memory once, and a long reduction in blocks whose slice
        of the reused operand's panel stays in L1 (``_reduction_block``); with a reused operand
        to ``pack`` at run time, j-tiles outside the rows instead."""
        main, spatial = kernel.main, kernel.spatial
        stmt = sch.get(main.block_rv)
        model = CpuModel.of(target)
        bits = stmt.writes[0].source.dtype.bits
        lanes = model.lanes(bits)
        loops = [it.loop_rv for it in main.iters]
        extents = [int_extent(sch, loop) for loop in loops]
        if None in extents:
            return None
        s_loops, r_loops = loops[:len(spatial)], loops[len(spatial):]
        width = extents[len(spatial) - 1]
        if not self.broadcast_operand or len(spatial) == 1:
            # No rows to reuse the vector operand over (pooling; a product of one row, which
            # the batch-1 normalisation leaves as [j] x [k]): a tile of j per task, over the
            # whole reduction.
            nr = vector_factor(width, lanes) if not self.broadcast_operand else _narrowed(
                register_tile_width(width, model, bits), width, 1, model, lanes)
            jo, ji = sch.split(s_loops[-1], [None, nr])
            sch.reorder(*s_loops[:-1], jo, *r_loops, ji)
            tile = sch.fuse(*s_loops[:-1], jo)
            sch.parallel(tile)
            return _Tile(tile, [ji], nr, lanes, r_loops[0])

        free = _free_axes(spatial, read_vars(stmt))
        row = free[0] if free else len(spatial) - 2
        outer = [loop for n, loop in enumerate(s_loops[:-1]) if n != row]
        nr = _narrowed(register_tile_width(width, model, bits), width, _extent(sch, outer) * extents[row], model, lanes)
        rows = _rows_on_the_stack(model.tile_rows(-(-nr // lanes)), nr * bits // 8, _extent(sch, r_loops))
        mr = divisor_near(extents[row], rows)
        jo, ji = sch.split(s_loops[-1], [None, nr])
        io, ii = sch.split(s_loops[row], [None, mr])
        stacked = []
        second = _second_row_axis(extents, free, row, rows // mr)
        if second is not None:
            axis, factor = second
            axis_out, axis_in = sch.split(s_loops[axis], [None, factor])
            outer = [axis_out if n == axis else loop for n, loop in enumerate(s_loops[:-1]) if n != row]
            stacked = [axis_in]
        panel = _reused_operand(sch, main, spatial, row)
        reduction_bytes = _extent(sch, r_loops) * bits // 8
        if panel is not None and reduction_bytes * nr < PANEL_BYTES:
            panel = None  # small enough to stay cached where it lies
        if panel is not None and in_panels(stmt.reads[panel].source, width, nr):
            panel = None  # laid out in panels at build time (relax_passes.pack_weights)
        outside = None if panel is None else _outside_panel(sch, outer, jo, _extent(sch, [io]) * mr, 4 * model.cores)
        if outside is not None:
            sch.reorder(*outer[:outside], jo, *outer[outside:], io, *r_loops, *stacked, ii, ji)
            task = sch.fuse(*outer[:outside], jo)
            sch.parallel(task)
            self.pack(sch, main, panel, task)
            anchor = io
        else:
            row_tiles = _row_tiles_per_block(_extent(sch, [io]), mr * reduction_bytes, _extent(sch, [jo]))
            blocks = []
            if row_tiles is not None:
                ib, io = sch.split(io, [None, row_tiles])
                blocks = [ib]
            kc = _reduction_block(extents[len(spatial):], nr * bits // 8)
            if kc is not None:  # K-blocks outside the row tiles: each slice of the panel stays in L1
                if not blocks:
                    # the row tiles are inside the task here: with few images and j-tiles
                    # (batch 1), blocks of them make the tasks that feed every core
                    per_block = _row_tiles_per_task(_extent(sch, [io]), _extent(sch, outer + [jo]), model.cores)
                    if per_block is not None:
                        ib, io = sch.split(io, [None, per_block])
                        blocks = [ib]
                *window, last = r_loops
                ko, ki = sch.split(last, [None, kc])
                sch.reorder(*outer, *blocks, jo, *window, ko, io, ki, *stacked, ii, ji)
                anchor = sch.fuse(*outer, *blocks, jo)
                sch.parallel(anchor)
                return _Tile(anchor, [*stacked, ii, ji], nr, lanes, window[0] if window else ko)
            sch.reorder(*outer, *blocks, jo, io, *r_loops, *stacked, ii, ji)
            anchor = sch.fuse(*outer, *blocks, jo, io)
            sch.parallel(anchor)
        return _Tile(anchor, [*stacked, ii, ji], nr, lanes, r_loops[0])

    @staticmethod
    def pack(sch, main, panel: int, task) -> None:
        """The reused operand's K x nr panel copied once per j-tile into contiguous memory:
        read in place, its rows lie a whole row length apart and collide in a few L1 sets;
        packed, the panel stays in L1 while every row block streams past it."""
        packed = sch.cache_read(main.block_rv, panel, "global")
        sch.compute_at(packed, task, preserve_unit_loops=True)
        inner = sch.get_loops(packed)[-1]
        if (int_extent(sch, inner) or 1) > 1:
            sch.vectorize(inner)

    @staticmethod
    def epilogue(sch, kernel: _Kernel, tile: _Tile, windows: list) -> None:
        """Padding windows and the epilogue computed per tile; the partial sums zeroed before
        the reduction; the tile's rows unrolled and its j in whole machine vectors."""
        for window in windows:
            sch.compute_at(window, tile.anchor, preserve_unit_loops=True)
        if kernel.after:
            epilogue = kernel.after[-1].block_rv
        else:
            epilogue = sch.cache_write(kernel.main.block_rv, 0, "global")
        sch.reverse_compute_at(epilogue, tile.anchor, preserve_unit_loops=True)
        init = sch.decompose_reduction(kernel.main.block_rv, tile.reduction)
        for block in (init, epilogue):
            vectorise_whole(sch, sch.get_loops(block)[-1], tile.lanes)
        for rows in tile.inner[:-1]:
            if (int_extent(sch, rows) or 1) > 1:
                sch.unroll(rows)
        if tile.nr > 1:
            vectorise_whole(sch, tile.inner[-1], tile.lanes)


def register_tile_width(width: int, model: CpuModel, dtype_bits: int) -> int:
    """The register tile's width (nr) for a contraction's output rows of ``width``: the whole
    row when it is at most WHOLE_ROW_VECTORS vectors (attention's value product, 32 wide:
    split, every row of the broadcast operand would be read and broadcast twice), else
    ``CpuModel.tile_vectors`` whole vectors, else the divisor that fills vectors best."""
    lanes = model.lanes(dtype_bits)
    if width % lanes == 0 and width <= WHOLE_ROW_VECTORS * lanes:
        return width
    vectors = model.tile_vectors(width, dtype_bits)
    return vectors * lanes if vectors else vector_factor(width, lanes)


def in_panels(buffer, width: int, nr: int) -> bool:
    """Is ``buffer`` a reused operand already laid out in panels (``relax_passes.pack_weights``),
    [width / P, ..., P] with P a multiple of ``nr``: each register tile's columns contiguous in
    every row of its panel (P = nr unless a small product narrowed its tiles, ``_narrowed``)?"""
    shape = [int(d) for d in buffer.shape]
    return len(shape) >= 3 and shape[-1] % nr == 0 and shape[0] * shape[-1] == width


def _schedule_errors():
    from tvm.s_tir import ScheduleError

    return ScheduleError


def _rows_on_the_stack(rows: int, row_bytes: int, terms: int) -> int:
    """The register tile's rows, fewer where a short reduction (under SHORT_REDUCTION terms)
    would otherwise put its partial sums (``rows`` x ``row_bytes``) past STACK_BYTES."""
    if terms >= SHORT_REDUCTION or rows * row_bytes < STACK_BYTES:
        return rows
    return max(1, (STACK_BYTES - 1) // row_bytes)


def _free_axes(spatial, reads) -> list[int]:
    """The spatial axes but j that the j-varying operand does not depend on, innermost first:
    the axes a register tile's rows may run along, each vector of that operand loaded once and
    reused across them (GEMM: i; NCHW convolution: output channels; NHWC: output width, then
    output rows and images). The first is the row axis; without any (depthwise convolution)
    the rows run along the axis just outside j."""
    j = spatial[-1].var.name
    vector_reads = [used for used in reads if j in used]
    return [index for index in range(len(spatial) - 2, -1, -1)
            if all(spatial[index].var.name not in used for used in vector_reads)]


def _second_row_axis(extents, free, row: int, missing: int) -> tuple[int, int] | None:
    """(axis, rows of it) stacked onto the tile's rows when the row axis is ``missing`` > 1
    times shorter than the tile (a convolution over a map one or two pixels wide, the
    rectifier's last): the next free axis out with more than one row (the images), split by a
    divisor near ``missing``; None otherwise."""
    if missing < 2:
        return None
    axis = next((n for n in free if n < row and extents[n] > 1), None)
    if axis is None:
        return None
    factor = divisor_near(extents[axis], missing)
    return (axis, factor) if factor > 1 else None


def _innermost_index_moves_with(region, var_name: str) -> bool:
    """Does the last index of a buffer region move with ``var_name``?"""
    from tvm.tirx.analysis import undefined_vars

    return var_name in {v.name for v in undefined_vars(region.region[-1].min)}


def _reduction_block(extents, panel_row_bytes: int) -> int | None:
    """The block (kc) of the innermost reduction loop when the reused operand's panel (every
    reduction step x nr) is larger than PANEL_L1_BYTES: the divisor of that loop (a matmul's K, a
    convolution's input channels) that keeps a kc x nr slice of the panel in the L1 cache while
    every row tile of the task passes over it; the other reduction loops (a convolution's window)
    go outside the row tiles too. None when the panel fits, or no block would."""
    total = panel_row_bytes
    for extent in extents:
        total *= extent
    if total <= PANEL_L1_BYTES:
        return None
    kc = divisor_near(extents[-1], max(1, PANEL_L1_BYTES // panel_row_bytes), lowest=16)
    if kc <= 1:
        return None
    return kc if kc < extents[-1] or len(extents) > 1 else None


def _row_tiles_per_block(row_tiles: int, tile_bytes: int, j_tiles: int) -> int | None:
    """Row tiles per block of at most ROW_BLOCK_BYTES of the broadcast operand (a divisor of
    ``row_tiles``, so no tile is partial), or None when the rows fit in one block or there is
    one j-tile (nothing is read twice)."""
    if j_tiles == 1 or row_tiles * tile_bytes <= ROW_BLOCK_BYTES:
        return None
    block = divisor_near(row_tiles, max(1, ROW_BLOCK_BYTES // tile_bytes))
    return block if 1 < block < row_tiles else None


def _narrowed(nr: int, width: int, rows: int, model: CpuModel, lanes: int) -> int:
    """``nr``, or one vector when a product this small (``rows`` output rows in all, the STN's
    fully connected layers at batch 1 or 2) would otherwise leave fewer than two tasks per core:
    it is bound by reading its weights, and narrower tiles make more tasks to read them."""
    tiles = -(-width // nr) * max(1, rows // model.tile_rows(-(-nr // lanes)))
    return lanes if tiles < 2 * model.cores and nr > lanes and width % lanes == 0 else nr


def _row_tiles_per_task(row_tiles: int, tasks: int, cores: int) -> int | None:
    """Row tiles per block when ``tasks`` parallel tasks (images x j-tiles) are fewer than two
    per core: the divisor of ``row_tiles`` that gives at least that many tasks (each block reads
    the whole panel again, so no more blocks than that); None when the tasks suffice."""
    if tasks >= 2 * cores:
        return None
    per_block = divisor_near(row_tiles, max(1, row_tiles * tasks // (2 * cores)))
    return per_block if per_block < row_tiles else None


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
    outside = 0
    for count in range(len(outer), -1, -1):
        inner = rows_per_tile
        for extent in extents[count:]:
            inner *= extent
        if inner >= PANEL_ROWS:
            outside = count
            break
    while _extent(sch, outer[:outside] + [jo]) < tasks:
        if outside == len(outer):
            return None
        outside += 1
    return outside


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
