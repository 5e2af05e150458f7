"""Elementwise, broadcast, transpose and gather kernels: all cores, whole vectors."""
from __future__ import annotations

from .common import vectorise_nest
from .rule import CpuRule


class Injective(CpuRule):
    """Every block injective: blocks are inlined into their consumers, except products, and
    each remaining loop nest is vectorised and parallelised (``vectorise_nest``).

    Products keep their own store: inlined into a following addition, LLVM contracts the pair
    into one FMA (one rounding instead of the graph's two), and the STN's sampling grid - a
    long chain of products and sums - then lands measurably off onnxruntime's. A product that
    only a conversion reads (a bf16 engine's value stored in bf16) has no addition to fuse with
    and is inlined: kept, it would be a pass through memory of its own.
    """

    name = "injective"

    def schedule(self, sch, blocks, target):
        if not all(b.is_injective() for b in blocks):
            return False
        kept = []
        final_stmt = sch.get(blocks[-1].block_rv)
        for block in blocks[:-1]:
            stmt = sch.get(block.block_rv)
            if _is_product(stmt) and not _converts(final_stmt, stmt.body.buffer):
                kept.append(block.block_rv)
            else:
                sch.compute_inline(block.block_rv)
        final = blocks[-1].block_rv
        under, anchored = _shared_outer_loop(sch, kept, final, target)
        if under is not None:
            # Products kept apart, each over the whole tensor, would make as many passes
            # through memory (the STN's TPS grid: some forty products and sums over
            # batch x grid points). Computed per outermost index (the batch) under one
            # parallel loop instead, each product's slice is still stored and read back -
            # the same roundings - but from cache, and the threads start once.
            for block in reversed(anchored):
                sch.compute_at(block, under, preserve_unit_loops=False)
            sch.parallel(under)
        for block in kept + [final]:
            inside = under if any(block.same_as(b) for b in anchored + [final]) else None
            if not vectorise_nest(sch, block, target, inside):
                return False
        return True


# Per outer index, a product this small is a loop LLVM unrolls whole; it then forwards the
# stored products to the sums that read them and contracts the pairs into FMAs after all.
# Those stay separate parallel passes (they are small).
MIN_ANCHORED_ELEMENTS = 512


def _shared_outer_loop(sch, kept, final, target):
    """(The final block's outermost loop, the kept products to compute under it) when the
    large products span the same outermost axis (so computing them per index of it
    recomputes nothing) and it has enough iterations to share among the cores; else
    (None, [])."""
    from .common import int_extent

    outer = sch.get_loops(final)[0]
    extent = int_extent(sch, outer)
    cores = int(target.attrs.get("num-cores") or 1)
    if not kept or extent is None or extent < 4 * cores:
        return None, []
    anchored = []
    for block in kept:
        loops = sch.get_loops(block)
        extents = [int_extent(sch, loop) for loop in loops]
        if None in extents or extents[0] != extent:
            return None, []
        size = 1
        for e in extents[1:]:
            size *= e
        if size >= MIN_ANCHORED_ELEMENTS:
            anchored.append(block)
    if len(anchored) < 2:
        return None, []
    return outer, anchored


def _converts(block, buffer) -> bool:
    """Is ``block`` a conversion of a value of ``buffer`` to another type, and nothing else?"""
    from tvm import tirx

    body = block.body
    if not (isinstance(body, tirx.BufferStore) and isinstance(body.value, tirx.Cast)):
        return False
    read = getattr(body.value.value, "source", None)  # the tensor a load reads
    return read is not None and read.same_as(buffer)


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
