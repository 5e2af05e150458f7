"""What reduced-precision arithmetic an LLVM target spec switches on (from its ``mattr``, as
``cpu_features`` wrote it from the CPU's flags): the one place the precision plans, the
rewrites and the build notes ask."""
from __future__ import annotations


def has_fp16_arithmetic(spec: dict | None) -> bool:
    """fp16 vector arithmetic: x86 avx512fp16, ARM fullfp16."""
    return bool(spec) and spec.get("kind") == "llvm" and bool(set(spec.get("mattr") or []) & {"+avx512fp16", "+fullfp16"})


def has_bf16_matrix_arithmetic(spec: dict | None) -> bool:
    """The bf16 matrix instructions the toolkit's bf16 kernels use: AMX tiles with bf16
    (``tdpbf16ps``)."""
    attrs = set((spec or {}).get("mattr") or [])
    return bool(spec) and spec.get("kind") == "llvm" and {"+amx-tile", "+amx-bf16"} <= attrs
