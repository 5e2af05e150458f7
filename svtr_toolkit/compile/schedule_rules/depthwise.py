"""Channels-last depthwise convolutions: vectors along the channels, a block of output
columns in registers.

A depthwise convolution has no operand shared across its output channels, so the
contraction rule's broadcast operand does not exist: every read moves with the channel (j).
In NHWC the channel is the contiguous axis of the input, the weights and the output, so a
vector of channels is one load from each, whatever the window's stride; the weight vector of
a window tap is reused by a block of output columns (the row axis), whose partial sums stay in
registers for the whole window.
"""
from __future__ import annotations

import math
import re

from .bf16_store import can_store_natively, converting_epilogue, if_it_applies
from .common import CpuModel, divisor_near, int_extent, read_vars, vector_factor, vectorise_whole
from .rule import CpuRule

# Accumulator vectors of the register tile (output columns x channel vectors), on every vector
# ISA: a depthwise window is bound by its loads, not by multiply-adds, and a longer block of
# columns reuses each loaded input and weight vector more (on AVX2's 16 registers, where some
# sums then live in L1, 16 measured 1.3-1.5x over 8).
TILE_VECTORS = 16

# The largest padded window a task fills for its strip of output rows, all channels: the
# fewer window rows per output row, the less of the input a task copies twice or more (a 5x5
# window over a strip of s rows copies (s + 4) / s rows per output row). Strips whose window
# was 1-2 MiB were faster than smaller ones on a Zen 4 with 1 MiB of L2 (docs: the Zen 4 page).
WINDOW_BYTES = 2 * 1024 * 1024

# The sums are fp32 (a bf16 or fp16 convolution's too): the window's values as the taps read them.
SUM_BITS = 32


class DepthwiseConv(CpuRule):
    name = "depthwise"

    def schedule(self, sch, blocks, target):
        main = self._match(sch, blocks)
        if main is None:
            return False
        spatial = [it for it in main.iters if it.kind == "S"]
        reduce = [it for it in main.iters if it.kind == "R"]
        windows = self._producers(sch, blocks, main)
        loops = [it.loop_rv for it in main.iters]
        extents = [int_extent(sch, loop) for loop in loops]
        if None in extents:
            return False
        task, anchor, tile_rows, tile_vector = self._tile(sch, target, main, spatial, reduce, extents, windows)
        self._windows(sch, windows, task, target)
        self._epilogue(sch, blocks, main, anchor, reduce, target)
        if (int_extent(sch, tile_rows) or 1) > 1:
            sch.unroll(tile_rows)
        sch.vectorize(tile_vector)
        return True

    # steps

    @staticmethod
    def _match(sch, blocks):
        """One reduction block, S..SR..R, at least (row, channel) spatial axes, every read
        moving with the channel (j), and one read (the weights) not moving with the row axis."""
        reductions = [b for b in blocks if not b.is_injective()]
        if len(reductions) != 1:
            return None
        main = reductions[0]
        kinds = main.dom_kind()
        if not re.fullmatch(r"S+R+", kinds) or kinds.count("S") < 2:
            return None
        spatial = [it for it in main.iters if it.kind == "S"]
        used = read_vars(sch.get(main.block_rv))
        j, row = spatial[-1].var.name, spatial[-2].var.name
        if not all(j in names for names in used):
            return None
        if not any(row not in names for names in used):
            return None
        index = blocks.index(main)
        if not all(b.is_injective() for b in blocks[:index] + blocks[index + 1:]):
            return None
        return main

    @staticmethod
    def _producers(sch, blocks, main) -> list:
        """The zero padding is computed per tile into a small window (returned, placed by
        ``_windows``): inlined, its bounds test is a branch at every tap, and the branches keep
        LLVM from holding the tile's partial sums in registers (they went to memory at every
        tap). Other producers and the epilogue's blocks are inlined."""
        index = blocks.index(main)
        windows = []
        for block in blocks[:index]:
            if "if_then_else" in str(sch.get(block.block_rv).body):
                windows.append(block.block_rv)
            else:
                sch.compute_inline(block.block_rv)
        for block in blocks[index + 1:-2]:  # the last two: the value and what stores it (_epilogue)
            sch.compute_inline(block.block_rv)
        return windows

    @staticmethod
    def _windows(sch, windows, anchor, target) -> None:
        """Each padding window filled per task, vectorised along the channels in vectors of the
        sums' width (TVM holds a bf16 window in fp32: the fill widens each value once)."""
        for window in windows:
            sch.compute_at(window, anchor, preserve_unit_loops=True)
            sch.set_scope(window, 0, "local")
            inner = sch.get_loops(window)[-1]
            vectorise_whole(sch, inner, CpuModel.of(target).lanes(SUM_BITS))

    @staticmethod
    def _tile(sch, target, main, spatial, reduce, extents, windows):
        """mr output columns x nr channels per register tile, the window's taps between the
        tile loops and the tile. With a padding window: one parallel task per image and strip
        of output rows, whose padded window of all channels is filled once per task
        (``_windows``) and serves every tile of the strip, channel block by channel block (a
        window per tile copies each input k times or more; a window per channel block reads
        the input in pieces of nr channels, for PP-OCRv4's 240 channels 32 bytes of bf16 in every
        pixel's 480, and waited on memory). Without one: a task per channel block and image."""
        model = CpuModel.of(target)
        lanes = model.lanes(sch.get(main.block_rv).writes[0].source.dtype.bits)
        n_spatial = len(spatial)
        loops = [it.loop_rv for it in main.iters]
        s_loops, r_loops = loops[:n_spatial], loops[n_spatial:]
        nr = vector_factor(extents[n_spatial - 1], lanes)
        vectors = -(-nr // lanes)
        mr = divisor_near(extents[n_spatial - 2], max(1, TILE_VECTORS // vectors))
        jo, ji = sch.split(s_loops[-1], [None, nr])
        io, ii = sch.split(s_loops[-2], [None, mr])
        outer = list(s_loops[:-2])
        if windows and n_spatial >= 3:
            images = math.prod(extents[:n_spatial - 3])
            strip_rows = _strip_rows(sch, windows[0], extents[n_spatial - 3], extents[n_spatial], images, model.cores)
            ho, hi = sch.split(outer[-1], [None, strip_rows])
            outer[-1:] = [ho]
            sch.reorder(*outer, jo, hi, io, *r_loops, ii, ji)
            task = sch.fuse(*outer)
        else:
            sch.reorder(jo, *outer, io, *r_loops, ii, ji)
            task = sch.fuse(jo, *outer)
        sch.parallel(task)
        return task, io, ii, ji

    @staticmethod
    def _epilogue(sch, blocks, main, anchor, reduce, target):
        """The bias and activation per tile, from the registers' sums (a conversion to bf16 at
        its end with the CPU's instruction where it has one: ``bf16_store``); the sums'
        zeroing vectorised."""
        after = blocks[blocks.index(main) + 1:]
        value = after[-2].block_rv if len(after) > 1 else None

        def converting(s):
            return converting_epilogue(s, main.block_rv, value, after[-1].block_rv, anchor, target,
                                       lambda s, block: vectorise_whole(s, s.get_loops(block)[-1],
                                                                        CpuModel.of(target).lanes(32)))

        if after and can_store_natively(sch, after[-1].block_rv, target) and if_it_applies(sch, converting):
            vectorised = []
        else:
            if value is not None:
                sch.compute_inline(value)
            if after:
                epilogue = after[-1].block_rv
                sch.reverse_compute_at(epilogue, anchor, preserve_unit_loops=True)
            else:
                epilogue = sch.cache_write(main.block_rv, 0, "global")
                sch.reverse_compute_at(epilogue, anchor, preserve_unit_loops=True)
            _local(sch, main.block_rv)
            vectorised = [epilogue]
        r_first = sch.get_loops(main.block_rv)[-(len(reduce) + 2)]
        init = sch.decompose_reduction(main.block_rv, r_first)
        for block in (init, *vectorised):
            inner = sch.get_loops(block)[-1]
            if (int_extent(sch, inner) or 1) > 1:
                sch.vectorize(inner)


def _strip_rows(sch, window, rows: int, taps: int, images: int, cores: int) -> int:
    """Output rows per task: the most (a divisor of ``rows``) whose padded window (the rows
    they read, ``taps`` high, by the padded width and all channels, at the sums' width) fits
    WINDOW_BYTES, and fewer where the images alone would give under two tasks per core."""
    padded = sch.get(window).writes[0].source
    height, width, channels = (int(x) for x in padded.shape[-3:])
    stride = max(1, (height - taps) // (rows - 1)) if rows > 1 else 1
    row_bytes = width * channels * max(SUM_BITS, padded.dtype.bits) // 8
    fitting = max(1, (WINDOW_BYTES // row_bytes - taps) // stride + 1)
    strips = -(-2 * cores // max(images, 1))
    return divisor_near(rows, max(1, min(fitting, rows // strips)))


def _local(sch, block) -> None:
    """The buffer ``block`` writes, computed per tile, in the tile's own stack frame: a "global"
    buffer under a parallel loop is a workspace allocation (a runtime call) per tile."""
    sch.set_scope(block, 0, "local")
