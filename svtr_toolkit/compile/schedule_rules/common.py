"""What the CPU rules need to know about a kernel and about the machine."""
from __future__ import annotations

from dataclasses import dataclass


# The register tile of a contraction: accumulators take this share of the vector registers;
# the rest hold the reused operand's vectors, the broadcast scalar and loop addresses.
ACCUMULATOR_SHARE = 3 / 4
# Vectors per tile row: wider tiles load each broadcast scalar fewer times per multiply-add.
MAX_TILE_VECTORS = 4
# Rows per tile: each vector of the reused operand is loaded once per this many multiply-adds.
MIN_TILE_ROWS = 6
MAX_TILE_ROWS = 12


@dataclass(frozen=True)
class CpuModel:
    """What the CPU schedules are shaped for: the register file and the cores.

    ``vector_bits``: SIMD width (128 NEON/SSE, 256 AVX2, 512 AVX-512); ``vector_registers``:
    architectural vector registers (16 on AVX2, 32 on AVX-512 and NEON), which bound how many
    partial sums a register tile keeps; ``cores``: the parallel tasks a kernel needs at least.
    """

    vector_bits: int = 256
    vector_registers: int = 16
    cores: int = 1

    def lanes(self, dtype_bits: int) -> int:
        return max(self.vector_bits // dtype_bits, 1)

    @property
    def accumulators(self) -> int:
        return int(self.vector_registers * ACCUMULATOR_SHARE)

    def tile_vectors(self, width: int, dtype_bits: int) -> int:
        """Whole vectors per register tile row for output rows of ``width`` that are a whole
        number of vectors: the most (up to MAX_TILE_VECTORS) that divide the row and still
        leave MIN_TILE_ROWS rows of accumulators; 0 for other widths."""
        lanes = self.lanes(dtype_bits)
        if width % lanes:
            return 0
        for vectors in range(MAX_TILE_VECTORS, 0, -1):
            if (width // lanes) % vectors == 0 and self.accumulators // vectors >= MIN_TILE_ROWS:
                return vectors
        return 1

    def tile_rows(self, vectors: int) -> int:
        """Rows of a register tile ``vectors`` vectors wide: as many as the accumulators allow."""
        return max(1, min(MAX_TILE_ROWS, self.accumulators // max(vectors, 1)))

    @classmethod
    def of(cls, target) -> "CpuModel":
        """From the LLVM target's feature list (``mattr``), not from its CPU name."""
        attrs = {str(a).lstrip("+") for a in (target.attrs.get("mattr") or []) if not str(a).startswith("-")}
        cores = int(target.attrs.get("num-cores") or 1)
        if "avx512f" in attrs:
            return cls(512, 32, cores)
        if "avx2" in attrs or "avx" in attrs:
            return cls(256, 16, cores)
        if "neon" in attrs or str(target.attrs.get("mtriple", "")).startswith("aarch64"):
            return cls(128, 32, cores)
        return cls(128, 16, cores)


def vectorise_whole(sch, loop, lanes: int) -> None:
    """Vectorise ``loop``; one of an odd number of whole vectors (48 lanes: 3) is split into
    unrolled machine vectors first: LLVM widens such a vector type to the next power of two and
    then scalarises its loads. A power-of-two number of vectors stays one wide vector, which
    LLVM splits itself: unrolled in TIR, every value the vectors share (a convolution's
    zero-padded input, behind a bounds test) would be computed once per vector."""
    extent = int_extent(sch, loop) or 1
    count = extent // lanes
    if extent > lanes and extent % lanes == 0 and count & (count - 1):
        count, vector = sch.split(loop, [None, lanes])
        sch.unroll(count)
        sch.vectorize(vector)
    elif extent > 1:
        sch.vectorize(loop)


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


def value_bits(block_stmt) -> int:
    """The bits of the widest float a block reads or writes: the type its vectors compute in.
    A conversion's output type would undersize them (fp32 values stored as bf16: vectors of
    32 lanes, two registers each of the fp32 arithmetic, and twice the horizontal work)."""
    from tvm import DataTypeCode

    floats = (DataTypeCode.FLOAT, DataTypeCode.BFLOAT)
    widths = [region.source.dtype.bits for region in list(block_stmt.writes) + list(block_stmt.reads)
              if region.source.dtype.type_code in floats]
    return max(widths) if widths else block_stmt.writes[0].source.dtype.bits


def vectorise_nest(sch, block, target, under=None) -> bool:
    """A loop nest of one injective block: its innermost axis vectorised, the rest one parallel
    loop. When the innermost axis is a whole number of vectors the loops are fused first, so
    short rows still fill vectors; an axis of at most half a vector (an image's 3 channels) is
    fused with the one before it; otherwise the innermost axis alone is vectorised (a fused
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
    lanes = CpuModel.of(target).lanes(value_bits(sch.get(block)))
    # The vector tile divides the innermost axis even when the loops are fused, so no vector
    # straddles two rows: a read broadcast along the other axes (a [N, 1, 1, C] scale of an
    # [N, H, W, C] map) indexes by the fused index modulo the row, which is then one
    # contiguous load per vector instead of a gather.
    inner = vector_factor(extents[-1], lanes)
    if len(loops) > 1 and extents[-1] % lanes == 0:
        loops = [sch.fuse(*loops)]
    elif len(loops) > 2 and 2 * extents[-1] <= lanes:
        # an axis of a few elements (an image's 3 channels): with the one before it, so each
        # parallel iteration is a whole row, not 3 elements
        loops = [*loops[:-2], sch.fuse(*loops[-2:])]
        inner = vector_factor(extents[-2] * extents[-1], lanes)
    outer, vector = sch.split(loops[-1], [None, inner])
    if len(loops) > 1:
        outer = sch.fuse(*loops[:-1], outer)
    if under is None:
        sch.parallel(outer)
    if inner > 1:
        sch.vectorize(vector)
    return True
