"""Elementwise, broadcast, transpose and gather kernels: all cores, whole vectors."""
from __future__ import annotations

from .common import vectorise_nest
from .rule import CpuRule


class Injective(CpuRule):
    """Every block injective: blocks are inlined into their consumers, except products, and
    each remaining loop nest is vectorised and parallelised (``vectorise_nest``).

    Products keep their own store: inlined into a following addition, LLVM contracts the pair
    into one FMA (one rounding instead of the graph's two), and the STN's sampling grid - a
    long chain of products and sums - then lands measurably off onnxruntime's.
    """

    name = "injective"

    def schedule(self, sch, blocks, target):
        if not all(b.is_injective() for b in blocks):
            return False
        kept = []
        for block in blocks[:-1]:
            if _is_product(sch.get(block.block_rv)):
                kept.append(block.block_rv)
            else:
                sch.compute_inline(block.block_rv)
        for block in kept + [blocks[-1].block_rv]:
            if not vectorise_nest(sch, block, target):
                return False
        return True


def _is_product(block) -> bool:
    from tvm import tirx

    body = block.body
    return isinstance(body, tirx.BufferStore) and isinstance(body.value, tirx.Mul)


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
