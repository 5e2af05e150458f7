"""bf16 matrix products on AMX tiles (Intel AMX-BF16: ``tdpbf16ps``), fp32 sums.

The kernel of ``bf16_product`` (``bf16_a``, ``bf16_matmul``, at most an elementwise epilogue:
the columns kept, bias, activation, rounding). Scheduled as:

- a parallel loop over blocks of output rows (an image row of an NHWC map: the rows along the
  output width) and over column blocks of ``cols`` tile columns;
- the block's activations converted to bf16 once per row block (``bf16_a`` computed there);
- the product of a block (its zeroing included) tensorized with an AMX intrinsic generated for
  its shape: for each 16-row tile of the block, its ``cols`` accumulator tiles zeroed in the
  tile registers, then for every 32 terms one activation tile and ``cols`` weight tiles loaded
  and multiplied, and the sums stored;
- the epilogue computed per block from those sums.

An AMX tile register holds 16 rows of 64 bytes; eight registers are used as ``cols``
accumulators, one activation tile and ``cols`` weight tiles (``cols`` <= 3). The tile
configuration is loaded at the start of each intrinsic call and released at its end. The
process must have asked the kernel for the AMX state first (``runtime.library``).
"""
from __future__ import annotations

from ..arithmetic import AMX_BF16
from .bf16_product import TILE_COLS, Bf16ProductRule, convert_once_per_task, epilogue_at, product_description
from .common import divisor_near

TILE_ROWS = 16  # rows of an AMX tile
MAX_COL_TILES = 3  # accumulators per call: 3 + 1 activation tile + 3 weight tiles <= 8 registers
# Rows per parallel task at most (a long 2-D product is cut into blocks this size).
MAX_BLOCK_ROWS = 128


def column_tiles(padded_width: int) -> int:
    """Accumulator tiles per intrinsic call for a padded output width (a multiple of 16)."""
    tiles = padded_width // TILE_COLS
    for cols in range(MAX_COL_TILES, 0, -1):
        if tiles % cols == 0:
            return cols
    return 1


def tile_rows(rows: int) -> int:
    """Rows per AMX tile for a block of ``rows``: the largest divisor up to 16."""
    return divisor_near(rows, TILE_ROWS)


class AmxContraction(Bf16ProductRule):
    name = AMX_BF16
    instructions = AMX_BF16
    max_block_rows = MAX_BLOCK_ROWS
    lowest_block_rows = TILE_ROWS

    def tile(self, sch, product, block_rows, target):
        mt = tile_rows(block_rows)
        cols = column_tiles(product.width)

        # tile: row blocks and column blocks, parallel over everything outside the block
        ro, ri = sch.split(product.rows_loop, [None, block_rows])
        co, ci = sch.split(product.cols_loop, [None, cols * TILE_COLS])
        sch.reorder(*product.outer, ro, co, ri, ci, product.k_loop)
        task = sch.fuse(*product.outer, ro)
        sch.parallel(task)
        convert_once_per_task(sch, product, task)
        epilogue_at(sch, product, co, target)
        sch.tensorize(ri, register_intrinsic(block_rows, mt, cols, product.depth))


_REGISTERED: set = set()


def register_intrinsic(rows: int, mt: int, cols: int, depth: int) -> str:
    """The name of a TensorIntrin computing C[rows, 16 * cols] = A[rows, depth] @ B for bf16
    bits A (row stride free) and B panels [cols, depth / 2, 16, 2], C fp32 (row stride free),
    with AMX tiles of ``mt`` rows: registered on first use."""
    name = f"svtr_amx_bf16_{rows}x{cols * TILE_COLS}x{depth}_t{mt}"
    if name in _REGISTERED:
        return name
    from tvm.s_tir import TensorIntrin

    TensorIntrin.register(name, *_intrinsic(rows, mt, cols, depth), override=True)
    _REGISTERED.add(name)
    return name


def _intrinsic(rows: int, mt: int, cols: int, depth: int):
    """(description, implementation) PrimFuncs of ``register_intrinsic``."""
    from tvm.script import tirx as T

    width = cols * TILE_COLS

    def intrin(name, *args):
        return T.evaluate(T.call_llvm_intrin("void", name, *args))

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa = T.int64()
        sc = T.int64()
        A = T.match_buffer(a, (rows, depth), "uint16", strides=[sa, 1], offset_factor=1)
        B = T.match_buffer(b, (cols, depth // 2, 16, 2), "uint16", offset_factor=1)
        C = T.match_buffer(c, (rows, width), "float32", strides=[sc, 1], offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(A[0:rows, 0:depth], B[0:cols, 0:depth // 2, 0:16, 0:2])
            T.writes(C[0:rows, 0:width])
            config = T.alloc_buffer((64,), "uint8", scope="local")
            for q in range(64):
                config[q] = T.uint8(0)
            config[0] = T.uint8(1)  # palette 1
            for t in range(8):  # tiles 0-2: sums and 3: activations (mt rows); 4-6: weights (16 rows); 64 B each
                config[16 + 2 * t] = T.uint8(64)
                config[48 + t] = T.Select(t >= 4, T.uint8(16), T.uint8(mt))
            intrin("llvm.x86.ldtilecfg", T.address_of(config[0]))
            for r in range(rows // mt):
                for t in T.unroll(cols):
                    intrin("llvm.x86.tilezero", T.Cast("int8", t))
                for k in range(depth // 32):
                    intrin("llvm.x86.tileloadd64", T.int8(3), T.address_of(A[r * mt, k * 32]), sa * 2)
                    for t in T.unroll(cols):
                        intrin("llvm.x86.tileloadd64", T.Cast("int8", 4 + t), T.address_of(B[t, k * 16, 0, 0]),
                               T.int64(64))
                    for t in T.unroll(cols):
                        intrin("llvm.x86.tdpbf16ps", T.Cast("int8", t), T.int8(3), T.Cast("int8", 4 + t))
                for t in T.unroll(cols):
                    intrin("llvm.x86.tilestored64", T.Cast("int8", t), T.address_of(C[r * mt, t * 16]), sc * 4)
            intrin("llvm.x86.tilerelease")

    return product_description(rows, cols, depth), impl
