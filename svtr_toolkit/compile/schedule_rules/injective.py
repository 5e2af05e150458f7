"""Elementwise, broadcast, transpose and gather kernels: all cores, whole vectors."""
from __future__ import annotations

from .common import CpuShape, int_extent, vector_factor
from .rule import CpuRule


class Injective(CpuRule):
    """Every block injective: inline all into the last, vectorise its innermost axis and run
    the rest as one parallel loop. When the innermost axis is a whole number of vectors the
    loops are fused first, so short rows still fill vectors; otherwise the innermost axis alone
    is vectorised (a fused index would turn contiguous loads into gathers)."""

    name = "injective"

    def schedule(self, sch, blocks, target):
        if not all(b.is_injective() for b in blocks):
            return False
        for block in blocks[:-1]:
            sch.compute_inline(block.block_rv)
        last = blocks[-1].block_rv
        loops = sch.get_loops(last)
        extents = [int_extent(sch, loop) for loop in loops]
        if not loops or None in extents:
            return False
        lanes = CpuShape.of(target).lanes(sch.get(last).writes[0].source.dtype.bits)
        if len(loops) > 1 and extents[-1] % lanes == 0:
            loops = [sch.fuse(*loops)]
            extents = [int_extent(sch, loops[0])]
        inner = vector_factor(extents[-1], lanes)
        outer, vector = sch.split(loops[-1], [None, inner])
        if len(loops) > 1:
            outer = sch.fuse(*loops[:-1], outer)
        sch.parallel(outer)
        if inner > 1:
            sch.vectorize(vector)
        return True


class ParallelFallback(CpuRule):
    """Anything else: each top-level loop nest's outermost data-parallel loop runs on every
    core. No vectors, but never the single-threaded scalar code of an unscheduled kernel."""

    name = "parallel-fallback"

    def apply(self, func, target):
        from tvm import s_tir

        sch = s_tir.Schedule(func)
        changed = False
        root = sch.get_sblock("root")
        for block in sch.get_child_blocks(root):
            loops = sch.get_loops(block)
            if not loops:
                continue
            try:
                sch.parallel(loops[0])
                changed = True
            except Exception:  # a reduction or dependent outer loop: leave it serial
                continue
        return sch if changed else None
