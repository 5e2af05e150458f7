"""What the CPU rules need to know about a kernel and about the machine."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CpuShape:
    """The register file a schedule is shaped for.

    ``vector_bits``: SIMD width (128 NEON/SSE, 256 AVX2, 512 AVX-512);
    ``vector_registers``: architectural vector registers (16 on AVX2, 32 on AVX-512 and NEON),
    which bound how many accumulators a GEMM tile can keep in registers.
    """

    vector_bits: int = 256
    vector_registers: int = 16

    def lanes(self, dtype_bits: int) -> int:
        return max(self.vector_bits // dtype_bits, 1)

    @classmethod
    def of(cls, target) -> "CpuShape":
        """From the LLVM target's feature list (``mattr``), not from its CPU name."""
        attrs = {str(a).lstrip("+") for a in (target.attrs.get("mattr") or []) if not str(a).startswith("-")}
        if "avx512f" in attrs:
            return cls(512, 32)
        if "avx2" in attrs or "avx" in attrs:
            return cls(256, 16)
        if "neon" in attrs or str(target.attrs.get("mtriple", "")).startswith("aarch64"):
            return cls(128, 32)
        return cls(128, 16)


def int_extent(sch, loop) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if hasattr(extent, "value") else None


def divisor_near(extent: int, want: int, lowest: int = 1) -> int:
    """The divisor of ``extent`` closest to ``want`` from below (at least ``lowest``), else 1.

    Tiles that divide their loop keep the inner loops free of bounds checks, which would
    otherwise stop LLVM from unrolling and vectorising them.
    """
    for factor in range(min(want, extent), lowest - 1, -1):
        if extent % factor == 0:
            return factor
    return 1


def vector_factor(extent: int, lanes: int, max_vectors: int = 2) -> int:
    """An inner (vectorised) tile for a loop of ``extent``: the most whole vectors (up to
    ``max_vectors``) that divide it; else the divisor that fills its vectors best (LLVM splits
    an odd width into full vectors plus a short one); else the whole loop when it is short."""
    for vectors in range(max_vectors, 0, -1):
        if extent % (vectors * lanes) == 0:
            return vectors * lanes
    if extent <= max_vectors * lanes:
        return extent
    candidates = [d for d in range(max(lanes // 2, 2), (max_vectors + 1) * lanes + 1) if extent % d == 0]
    if not candidates:
        return 1
    return max(candidates, key=lambda d: (d / (-(-d // lanes) * lanes), d))


def read_vars(block_stmt) -> list[set]:
    """For each buffer a block reads: the variables its index expressions use."""
    from tvm.tirx.analysis import undefined_vars

    used = []
    for region in block_stmt.reads:
        names = set()
        for rng in region.region:
            names |= {v.name for v in undefined_vars(rng.min)} | {v.name for v in undefined_vars(rng.extent)}
        used.append(names)
    return used


def vectorise_nest(sch, block, target, under=None) -> bool:
    """A loop nest of one injective block: its innermost axis vectorised, the rest one parallel
    loop. When the innermost axis is a whole number of vectors the loops are fused first, so
    short rows still fill vectors; otherwise the innermost axis alone is vectorised (a fused
    index would turn contiguous loads into gathers). With ``under`` (a loop the block was
    computed at, already parallel) only the loops inside it, and they stay serial."""
    loops = sch.get_loops(block)
    if under is not None:
        anchor = sch.get(under)
        position = next(n for n, loop in enumerate(loops) if sch.get(loop).same_as(anchor))
        loops = loops[position + 1:]
        if not loops:
            return True
    extents = [int_extent(sch, loop) for loop in loops]
    if not loops or None in extents:
        return False
    lanes = CpuShape.of(target).lanes(sch.get(block).writes[0].source.dtype.bits)
    if len(loops) > 1 and extents[-1] % lanes == 0:
        loops = [sch.fuse(*loops)]
        extents = [int_extent(sch, loops[0])]
    inner = vector_factor(extents[-1], lanes)
    outer, vector = sch.split(loops[-1], [None, inner])
    if len(loops) > 1:
        outer = sch.fuse(*loops[:-1], outer)
    if under is None:
        sch.parallel(outer)
    if inner > 1:
        sch.vectorize(vector)
    return True
