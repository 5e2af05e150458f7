"""The bf16 plan's product kernel as ``relax_passes.bf16_products`` builds it, and the steps the
two rules that schedule it share (``amx``: AMX tiles; ``bf16_dot``: AVX-512 BF16 dot products).

The kernel: ``bf16_a`` (the activations' bf16 bits, the reduction padded with zeros to what the
instructions read: whole 32-term rows for AMX tiles, whole pairs for ``vdpbf16ps``,
``reduction_multiple``), ``bf16_matmul`` (fp32 sums over the padded reduction, output columns padded to
whole 16-column vectors, the weights as panels of bf16 pairs [Np / 16, Kp / 2, 16, 2]: the
layout both AMX weight tiles and ``vdpbf16ps`` read), then at most an elementwise epilogue.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..arithmetic import bf16_matrix_instructions, target_spec
from .bf16_store import can_store_natively, converting_epilogue, if_it_applies
from .common import CpuModel, divisor_near, int_extent
from .rule import CpuRule

A_BLOCK = "bf16_a"
MATMUL_BLOCK = "bf16_matmul"
TILE_COLS = 16  # fp32 columns of an accumulator vector / AMX tile row (64 bytes)
TILE_K = 32  # bf16 terms of an AMX tile row (64 bytes): the reduction AMX tiles read is padded to it
PAIR = 2  # bf16 terms a vdpbf16ps lane reads: the reduction the dot products read is padded to it


def reduction_multiple(instructions: str | None) -> int:
    """The bf16 terms the product kernel's reduction is padded to for ``instructions``
    (``arithmetic.bf16_matrix_instructions``): AMX tiles read rows of 32, ``vdpbf16ps`` pairs.
    (PP-OCRv4's 240-channel products: padded to 256 for AMX, 240 as they are for the pairs.)"""
    from ..arithmetic import AMX_BF16

    return TILE_K if instructions == AMX_BF16 else PAIR


@dataclass
class Bf16Product:
    a_block: object  # dlight BlockInfo of bf16_a
    main: object  # ... of bf16_matmul
    after: list  # the epilogue's blocks
    outer: list  # loops outside the rows (batch, image rows)
    rows_loop: object
    cols_loop: object
    k_loop: object
    rows: int
    width: int  # padded output columns
    depth: int  # padded reduction
    outer_extent: int  # iterations of the outer loops together

    def block_rows(self, cores: int, most: int, lowest: int) -> int:
        """Rows per parallel task: at most ``most`` and a divisor of the rows (at least
        ``lowest`` where one exists), fewer where that leaves under two tasks per core (a
        batch-1 product of 100 rows would otherwise run on one core)."""
        want = most
        while True:
            block = self.rows if self.rows <= want else divisor_near(self.rows, want, lowest)
            if want <= lowest or self.outer_extent * (self.rows // block) >= 2 * cores:
                return block
            want //= 2


def match_product(sch, blocks) -> Bf16Product | None:
    """The kernel's blocks and loops, or None when ``blocks`` are not this kernel."""
    names = [b.name for b in blocks]
    if A_BLOCK not in names or MATMUL_BLOCK not in names or names.index(A_BLOCK) != names.index(MATMUL_BLOCK) - 1:
        return None
    after = blocks[names.index(MATMUL_BLOCK) + 1:]
    if not all(b.is_injective() for b in after):
        return None
    main = blocks[names.index(MATMUL_BLOCK)]
    loops = sch.get_loops(main.block_rv)
    extents = [int_extent(sch, loop) for loop in loops]
    if None in extents or len(loops) < 3:
        return None
    *outer, rows_loop, cols_loop, k_loop = loops
    rows, width, depth = extents[-3:]
    if width % TILE_COLS or depth % PAIR:
        return None
    outer_extent = 1
    for extent in extents[:-3]:
        outer_extent *= extent
    return Bf16Product(blocks[names.index(A_BLOCK)], main, after, outer, rows_loop, cols_loop, k_loop, rows, width, depth,
                       outer_extent)


def convert_once_per_task(sch, product: Bf16Product, task) -> None:
    """The activations of a parallel task's rows converted to bf16 once, for all its column tiles."""
    sch.compute_at(product.a_block.block_rv, task, preserve_unit_loops=True)
    vectorise_innermost(sch, product.a_block.block_rv, 32)


def epilogue_at(sch, product: Bf16Product, loop, target=None) -> None:
    """The epilogue computed under ``loop`` from the sums the tiles stored in a local buffer
    (the buffer's extent is what the loop's body writes); one that ends converting to bf16
    with the CPU's conversion instruction where ``target`` has it (``bf16_store``)."""
    if target is not None and product.after and can_store_natively(sch, product.after[-1].block_rv, target) \
            and if_it_applies(sch, lambda s: _converting_epilogue(s, product, loop, target)):
        return
    for block in product.after[:-1]:
        sch.compute_inline(block.block_rv)
    if product.after:
        epilogue = product.after[-1].block_rv
        sch.set_scope(product.main.block_rv, 0, "local")
    else:
        epilogue = sch.cache_write(product.main.block_rv, 0, "local")
    sch.reverse_compute_at(epilogue, loop, preserve_unit_loops=True)
    vectorise_innermost(sch, epilogue, TILE_COLS)


def _converting_epilogue(sch, product: Bf16Product, loop, target) -> bool:
    """The epilogue's blocks but the last two inlined, the value (the last but one, or the
    sums themselves) computed under ``loop`` and the conversion to bf16 stored natively."""
    after = product.after
    for block in after[:-2]:
        sch.compute_inline(block.block_rv)
    value = after[-2].block_rv if len(after) > 1 else None
    return converting_epilogue(sch, product.main.block_rv, value, after[-1].block_rv, loop, target,
                               lambda s, block: vectorise_innermost(s, block, TILE_COLS))


def vectorise_innermost(sch, block, lanes: int) -> None:
    inner = sch.get_loops(block)[-1]
    extent = int_extent(sch, inner) or 1
    if extent % lanes == 0 and extent > lanes:
        _, inner = sch.split(inner, [None, lanes])
    if (int_extent(sch, inner) or 1) > 1:
        sch.vectorize(inner)


class Bf16ProductRule(CpuRule):
    """A rule for this kernel on targets with one set of bf16 ``instructions``: matches the
    target and the kernel, picks the rows per parallel task, and leaves the tiling to ``tile``."""

    instructions = ""  # arithmetic.AMX_BF16 or arithmetic.AVX512_BF16
    max_block_rows = 128
    lowest_block_rows = 8

    def schedule(self, sch, blocks, target):
        if bf16_matrix_instructions(target_spec(target)) != self.instructions:
            return False
        product = match_product(sch, blocks)
        if product is None or product.depth % reduction_multiple(self.instructions):
            return False
        block_rows = product.block_rows(CpuModel.of(target).cores, self.max_block_rows, self.lowest_block_rows)
        self.tile(sch, product, block_rows, target)
        return True

    def tile(self, sch, product: Bf16Product, block_rows: int, target) -> None:
        raise NotImplementedError


def product_description(rows: int, col_tiles: int, depth: int):
    """The TensorIntrin description both rules' intrinsics implement: C[rows, 16 * col_tiles]
    = A[rows, depth] @ B for bf16 bits A (row stride free) and B panels [col_tiles, depth / 2,
    16, 2], C fp32 in a local buffer (row stride free), zeroed first."""
    from tvm.script import tirx as T

    width = col_tiles * TILE_COLS

    def as_float(bits):
        return T.reinterpret("float32", T.shift_left(T.Cast("uint32", bits), T.uint32(16)))

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa = T.int64()
        sc = T.int64()
        A = T.match_buffer(a, (rows, depth), "uint16", strides=[sa, 1], offset_factor=1)
        B = T.match_buffer(b, (col_tiles, depth // 2, 16, 2), "uint16", offset_factor=1)
        C = T.match_buffer(c, (rows, width), "float32", strides=[sc, 1], offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(A[0:rows, 0:depth], B[0:col_tiles, 0:depth // 2, 0:16, 0:2])
            T.writes(C[0:rows, 0:width])
            for i, j, k in T.grid(rows, width, depth):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    T.reads(C[vi, vj], A[vi, vk], B[vj // 16, vk // 2, vj % 16, vk % 2])
                    T.writes(C[vi, vj])
                    with T.init():
                        C[vi, vj] = T.float32(0)
                    C[vi, vj] = C[vi, vj] + as_float(A[vi, vk]) * as_float(B[vj // 16, vk // 2, vj % 16, vk % 2])

    return desc
