"""bf16 matrix products with AVX-512 BF16 dot products (``vdpbf16ps``), fp32 sums.

The kernel of ``bf16_product`` (the AMX rule's too), for CPUs with avx512_bf16 and no AMX
(AMD Zen 4, Intel Cooper Lake). One ``vdpbf16ps`` adds to 16 fp32 sums the products of 16 pairs
of bf16 weights by one pair of bf16 activations (64 FLOP, twice an fp32 FMA's 32), and the pair
layout of the panels is the one it reads. Scheduled as:

- a parallel loop over blocks of output rows, the block's activations converted to bf16 once;
- per column tile of ``nr`` vectors (16 columns each) and row tile of ``mr`` rows, a register
  tile of ``mr x nr`` fp32 accumulators over the whole reduction: for each pair of terms,
  ``nr`` weight vectors loaded and each row's activation pair broadcast to them;
- the epilogue per row tile from the tile's sums.

TVM's TIR cannot hold a vector of bf16 values for LLVM (it legalises them to fp32), so the one
instruction is a small LLVM IR function imported into the kernel (``pragma_import_llvm``)
and called on int32 vectors that carry the bf16 pairs' bits; LLVM inlines it.
"""
from __future__ import annotations

from ..arithmetic import AVX512_BF16
from .bf16_product import TILE_COLS, Bf16ProductRule, convert_once_per_task, epilogue_at, product_description
from .common import divisor_near

# zmm registers for the accumulators of a register tile: 32 less the nr weight vectors and
# the broadcast activation pairs in flight.
MAX_ACCUMULATORS = 24
MAX_COL_VECTORS = 4
MAX_BLOCK_ROWS = 128  # rows per parallel task at most (their bf16 copy stays in L1/L2)
DOT = "svtr_dpbf16ps"

# The instruction as LLVM IR: LLVM's intrinsic takes <32 x bfloat> operands, a type TIR's
# vectors cannot carry; the int32 lanes hold the same bits (a pair of bf16 values each).
DOT_IR = f"""
define linkonce_odr <16 x float> @{DOT}(<16 x float> %sums, <16 x i32> %a, <16 x i32> %b) #0 {{
  %x = bitcast <16 x i32> %a to <32 x bfloat>
  %y = bitcast <16 x i32> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %sums, <32 x bfloat> %x, <32 x bfloat> %y)
  ret <16 x float> %r
}}
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
attributes #0 = {{ alwaysinline nounwind "target-features"="+avx512bf16,+avx512f,+avx512bw" }}
"""


def register_tile(rows: int, padded_width: int) -> tuple[int, int]:
    """(mr rows, nr vectors) of the register tile: the widest column tile up to 4 vectors that
    divides the width, then the most rows that divide the block and fit the accumulators."""
    vectors = padded_width // TILE_COLS
    nr = max(v for v in range(1, MAX_COL_VECTORS + 1) if vectors % v == 0)
    return divisor_near(rows, MAX_ACCUMULATORS // nr), nr


class Bf16DotContraction(Bf16ProductRule):
    name = AVX512_BF16
    instructions = AVX512_BF16
    max_block_rows = MAX_BLOCK_ROWS

    def tile(self, sch, product, block_rows, target):
        mr, nr = register_tile(block_rows, product.width)

        # tile: row blocks (parallel with everything outside them), column tiles, row tiles
        ro, ri = sch.split(product.rows_loop, [None, block_rows])
        co, ci = sch.split(product.cols_loop, [None, nr * TILE_COLS])
        rio, rii = sch.split(ri, [None, mr])
        sch.reorder(*product.outer, ro, co, rio, rii, ci, product.k_loop)
        task = sch.fuse(*product.outer, ro)
        sch.parallel(task)
        convert_once_per_task(sch, product, task)
        epilogue_at(sch, product, rio, target)  # per row tile, from the register tile's sums
        sch.tensorize(rii, register_intrinsic(mr, nr, product.depth))


_REGISTERED: set = set()


def register_intrinsic(mr: int, nr: int, depth: int) -> str:
    """The name of a TensorIntrin computing C[mr, 16 * nr] = A[mr, depth] @ B for bf16 bits A
    (row stride free) and B panels [nr, depth / 2, 16, 2], C fp32: registered on first use."""
    name = f"svtr_bf16_dot_{mr}x{nr * TILE_COLS}x{depth}"
    if name not in _REGISTERED:
        from tvm.s_tir import TensorIntrin

        TensorIntrin.register(name, *_intrinsic(mr, nr, depth), override=True)
        _REGISTERED.add(name)
    return name


def _intrinsic(mr: int, nr: int, depth: int):
    """(description, implementation) PrimFuncs of ``register_intrinsic``."""
    from tvm.script import tirx as T

    width = nr * TILE_COLS
    pairs = depth // 2

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa = T.int64()
        sc = T.int64()
        A = T.match_buffer(a, (mr, depth), "uint16", strides=[sa, 1], offset_factor=1)
        B = T.match_buffer(b, (nr, pairs, 16, 2), "uint16", offset_factor=1)
        C = T.match_buffer(c, (mr, width), "float32", strides=[sc, 1], offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(A[0:mr, 0:depth], B[0:nr, 0:pairs, 0:16, 0:2])
            T.writes(C[0:mr, 0:width])
            panels = T.decl_buffer((nr * depth * 16,), "uint16", data=B.data, elem_offset=B.elem_offset)
            sums = T.alloc_buffer((mr * width,), "float32", scope="local")
            with T.attr(0, "pragma_import_llvm", DOT_IR):
                for q in T.unroll(mr * nr):
                    sums[T.Ramp(q * 16, 1, 16)] = T.Broadcast(T.float32(0), 16)
                for p in range(pairs):
                    for r in T.unroll(mr):
                        for t in T.unroll(nr):
                            sums[T.Ramp((r * nr + t) * 16, 1, 16)] = T.call_extern(
                                "float32x16", DOT, sums[T.Ramp((r * nr + t) * 16, 1, 16)],
                                T.reinterpret("int32x16", panels[T.Ramp(t * depth * 16 + p * 32, 1, 32)]),
                                T.Broadcast(T.reinterpret("int32", A[r, T.Ramp(p * 2, 1, 2)]), 16))
                for r in T.unroll(mr):
                    for t in T.unroll(nr):
                        C[r, T.Ramp(t * 16, 1, 16)] = sums[T.Ramp((r * nr + t) * 16, 1, 16)]

    return product_description(mr, nr, depth), impl
