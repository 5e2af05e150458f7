"""What reduced-precision arithmetic an LLVM target spec switches on (from its ``mattr``, as
``cpu_features`` wrote it from the CPU's flags): the one place the precision plans, the
rewrites, the schedule rules and the build notes ask."""
from __future__ import annotations

AMX_BF16 = "amx-bf16"  # AMX tiles (tdpbf16ps): Intel Sapphire Rapids and later
AVX512_BF16 = "avx512-bf16"  # AVX-512 dot products of bf16 pairs (vdpbf16ps): AMD Zen 4, Intel Cooper Lake


def has_fp16_arithmetic(spec: dict | None) -> bool:
    """fp16 vector arithmetic: x86 avx512fp16, ARM fullfp16."""
    return bool(spec) and spec.get("kind") == "llvm" and bool(set(spec.get("mattr") or []) & {"+avx512fp16", "+fullfp16"})


def bf16_matrix_instructions(spec: dict | None) -> str | None:
    """The bf16 instructions the toolkit's bf16 kernels use on this target (bf16 products
    summed in fp32): ``AMX_BF16`` where it has AMX tiles, else ``AVX512_BF16`` where it has
    avx512_bf16, else None."""
    if not spec or spec.get("kind") != "llvm":
        return None
    attrs = {str(a) for a in spec.get("mattr") or []}
    if {"+amx-tile", "+amx-bf16"} <= attrs:
        return AMX_BF16
    if {"+avx512bf16", "+avx512f"} <= attrs:
        return AVX512_BF16
    return None


def has_bf16_dot_products(spec: dict | None) -> bool:
    """AVX-512 BF16 dot products (``vdpbf16ps``), with or without AMX tiles beside them."""
    if not spec or spec.get("kind") != "llvm":
        return False
    return {"+avx512bf16", "+avx512f"} <= {str(a) for a in spec.get("mattr") or []}


def has_bf16_matrix_arithmetic(spec: dict | None) -> bool:
    return bf16_matrix_instructions(spec) is not None


def target_spec(target) -> dict:
    """The parts of a ``tvm.target.Target`` these questions read, as a spec dict."""
    return {"kind": str(target.kind.name), "mattr": [str(a) for a in target.attrs.get("mattr") or []]}
