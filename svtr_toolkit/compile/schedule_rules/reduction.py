"""Row reductions followed by elementwise work (softmax, layer-norm statistics)."""
from __future__ import annotations

from .rule import CpuRule


class RowReduction(CpuRule):
    """TVM dlight's CPU ``Reduction`` rule: the shared leading axes run in parallel, each row's
    reductions and elementwise blocks are computed together under them, and the elementwise
    ones vectorised. Wrapped only so it reports under its own name like the other rules."""

    name = "row-reduction"

    def apply(self, func, target):
        from tvm.s_tir.dlight.cpu import Reduction

        try:
            return Reduction().apply(func, target, False)
        except Exception:
            return None
