"""Storing fp32 values as bf16 with AVX-512 BF16's conversion instructions.

TVM legalises a conversion to bf16 as integer arithmetic (the rounding to nearest even done by
hand: six instructions per vector). Where the CPU has avx512_bf16, one ``vcvtneps2bf16`` rounds
16 values the same way, and ``vcvtne2ps2bf16`` 32. A kernel whose last block only converts an
fp32 tile to bf16 (``astype`` fused at the end of a producer: the bf16 plan's stores) gets that
block tensorized with ``store_intrinsic``: the value block before it computes the tile into a
local buffer, the conversion reads it.

The instructions treat a denormal input as zero; the hand-made rounding keeps it (a bf16
denormal). Values under 2^-126 in magnitude are the only ones that differ.
"""
from __future__ import annotations

from ..arithmetic import has_bf16_dot_products, target_spec
from .common import int_extent

CONVERT = {16: "svtr_cvtneps2bf16", 32: "svtr_cvtne2ps2bf16"}

# LLVM's intrinsics return bfloat vectors, a type TIR cannot carry: the i32 lanes hold the bits.
CONVERT_IR = {
    16: f"""
define linkonce_odr <8 x i32> @{CONVERT[16]}(<16 x float> %x) #0 {{
  %b = call <16 x bfloat> @llvm.x86.avx512bf16.cvtneps2bf16.512(<16 x float> %x)
  %out = bitcast <16 x bfloat> %b to <8 x i32>
  ret <8 x i32> %out
}}
declare <16 x bfloat> @llvm.x86.avx512bf16.cvtneps2bf16.512(<16 x float>)
attributes #0 = {{ alwaysinline nounwind "target-features"="+avx512bf16,+avx512f,+avx512bw,+avx512vl" }}
""",
    32: f"""
define linkonce_odr <16 x i32> @{CONVERT[32]}(<16 x float> %low, <16 x float> %high) #0 {{
  %b = call <32 x bfloat> @llvm.x86.avx512bf16.cvtne2ps2bf16.512(<16 x float> %high, <16 x float> %low)
  %out = bitcast <32 x bfloat> %b to <16 x i32>
  ret <16 x i32> %out
}}
declare <32 x bfloat> @llvm.x86.avx512bf16.cvtne2ps2bf16.512(<16 x float>, <16 x float>)
attributes #0 = {{ alwaysinline nounwind "target-features"="+avx512bf16,+avx512f,+avx512bw" }}
""",
}

_REGISTERED: set = set()


def store_intrinsic(lanes: int) -> str:
    """The name of a TensorIntrin O[lanes] (bf16) = E[lanes] (fp32, a local buffer) for 16 or 32 lanes."""
    name = f"svtr_bf16_store_{lanes}"
    if name not in _REGISTERED:
        from tvm.s_tir import TensorIntrin
        from tvm.script import tirx as T

        @T.prim_func(s_tir=True)
        def desc(e: T.handle, o: T.handle) -> None:
            E = T.match_buffer(e, (lanes,), "float32", offset_factor=1, scope="local")
            O = T.match_buffer(o, (lanes,), "bfloat16", offset_factor=1)
            with T.sblock("root"):
                T.reads(E[0:lanes])
                T.writes(O[0:lanes])
                for i in T.serial(lanes):
                    with T.sblock("convert"):
                        vi = T.axis.remap("S", [i])
                        T.reads(E[vi])
                        T.writes(O[vi])
                        O[vi] = T.Cast("bfloat16", E[vi])

        @T.prim_func(s_tir=True)
        def impl(e: T.handle, o: T.handle) -> None:
            E = T.match_buffer(e, (lanes,), "float32", offset_factor=1, scope="local")
            O = T.match_buffer(o, (lanes,), "bfloat16", offset_factor=1)
            with T.sblock("root"):
                T.reads(E[0:lanes])
                T.writes(O[0:lanes])
                bits = T.decl_buffer((lanes,), "uint16", data=O.data, elem_offset=O.elem_offset)
                with T.attr(0, "pragma_import_llvm", CONVERT_IR[lanes]):
                    if lanes == 32:
                        bits[T.Ramp(0, 1, 32)] = T.reinterpret("uint16x32", T.call_extern(
                            "int32x16", CONVERT[32], E[T.Ramp(0, 1, 16)], E[T.Ramp(16, 1, 16)]))
                    else:
                        bits[T.Ramp(0, 1, 16)] = T.reinterpret("uint16x16", T.call_extern(
                            "int32x8", CONVERT[16], E[T.Ramp(0, 1, 16)]))

        TensorIntrin.register(name, desc, impl, override=True)
        _REGISTERED.add(name)
    return name


def converts_to_bf16(sch, block) -> bool:
    """Does ``block`` only convert one fp32 value to bf16 (``out[...] = Cast(bf16, in[...])``)?"""
    from tvm import tirx

    store = sch.get(block).body
    if not (isinstance(store, tirx.BufferStore) and str(store.buffer.dtype) == "bfloat16"
            and isinstance(store.value, tirx.Cast)):
        return False
    loaded = getattr(store.value.value, "source", None)  # a load (TIR's TensorLoad) of one value
    return loaded is not None and str(loaded.dtype) == "float32"


def can_store_natively(sch, cast, target) -> bool:
    """Does ``target`` have the conversions, and does ``cast`` only convert an fp32 value to
    bf16? (What a rule asks before trying ``store_natively`` on a copy of its schedule.)"""
    return has_bf16_dot_products(target_spec(target)) and converts_to_bf16(sch, cast)


def store_natively(sch, value, cast, anchor, target) -> bool:
    """Where ``can_store_natively``: ``value``'s buffer (the fp32 tile, ``value`` already
    computed under ``anchor``) made local, ``cast`` (converting it) computed under ``anchor``
    and its innermost loop tensorized in 32 or 16 lanes. False where the kernel is not of that
    form (a TVM schedule error included: run it on a copy first, ``if_it_applies``)."""
    if not can_store_natively(sch, cast, target):
        return False
    sch.set_scope(value, 0, "local")
    sch.reverse_compute_at(cast, anchor, preserve_unit_loops=True)
    inner = sch.get_loops(cast)[-1]
    extent = int_extent(sch, inner) or 0
    lanes = 32 if extent % 32 == 0 else 16
    if extent % lanes:
        return False
    if extent > lanes:
        _, inner = sch.split(inner, [None, lanes])
    sch.tensorize(inner, store_intrinsic(lanes))
    return True


def converting_epilogue(sch, sums, value, cast, anchor, target, vectorise) -> bool:
    """A register tile's epilogue ending in a conversion to bf16, stored natively: the tile's
    ``sums`` kept local; ``value`` (the block computing the fp32 value ``cast`` converts, or None
    where ``cast`` reads the sums themselves) computed under ``anchor`` and vectorised by
    ``vectorise(sch, block)``; then ``store_natively``. The epilogue's other blocks are inlined
    into ``value`` beforehand by the rule."""
    sch.set_scope(sums, 0, "local")
    if value is not None:
        sch.reverse_compute_at(value, anchor, preserve_unit_loops=True)
        vectorise(sch, value)
    return store_natively(sch, value if value is not None else sums, cast, anchor, target)


def if_it_applies(sch, steps) -> bool:
    """``steps(schedule)`` (True when it applied) tried on a copy of ``sch`` first, then on
    ``sch`` only where it applied: a schedule primitive that refuses midway would leave ``sch``
    half changed."""
    from tvm.s_tir import ScheduleError

    try:
        if not steps(sch.copy()):
            return False
    except ScheduleError:
        return False
    return steps(sch)
