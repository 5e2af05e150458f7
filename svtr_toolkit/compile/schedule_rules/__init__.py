"""Default CPU schedules without tuning: a list of rules tried in order on every kernel.

The model of TVM's dlight: each rule recognises one class of kernel and schedules it, or
passes. A kernel a tuning database already scheduled is left alone, so tuning refines these
defaults wherever it has a record. ``ApplyRules`` remembers which rule took each kernel (or
that none did), for the build's report.
"""
from __future__ import annotations

from .amx import AmxContraction
from .attention import FusedAttention
from .attention_bf16 import Bf16Attention
from .bf16_dot import Bf16DotContraction
from .chunked_contraction import ChunkedContraction
from .contraction import TiledContraction
from .depthwise import DepthwiseConv
from .injective import Injective, ParallelFallback
from .reduction import RowReduction
from .rule import CpuRule

__all__ = ["CpuRule", "default_rules", "first_rule", "ApplyRules"]


def default_rules() -> list:
    # Contractions before row reductions: a matmul with an elementwise epilogue also
    # matches dlight's Reduction pattern (reduction then injective), and would lose its
    # register tiling there; so would a channels-last pooling its vectors along the channels.
    # The K-chunked fp16 and the bf16 (AMX or dot-product) matmuls and the fused attention are
    # recognised by their block names only.
    return [AmxContraction(), Bf16DotContraction(), ChunkedContraction(), Bf16Attention(), FusedAttention(), TiledContraction(), DepthwiseConv(), TiledContraction(broadcast_operand=False),
            RowReduction(), Injective(), ParallelFallback()]


def first_rule(func, target, rules=None):
    """(name of the first rule that schedules ``func``, its schedule), or (None, None)."""
    for rule in default_rules() if rules is None else rules:
        sch = rule.apply(func, target)
        if sch is not None:
            return rule.name, sch
    return None, None


def ApplyRules(rules=None, report: dict | None = None):  # noqa: N802 (a pass, named like TVM's)
    """A module pass: schedule every unscheduled PrimFunc with the first rule that takes it.

    ``report`` (a dict) receives {kernel name: rule name, "database" or None}.
    """
    import tvm

    rules = default_rules() if rules is None else rules

    @tvm.transform.module_pass(opt_level=0, name="SvtrApplyScheduleRules")
    def transform(mod, _ctx):
        from tvm import tirx

        target = tvm.target.Target.current(allow_none=False)
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            name = gvar.name_hint
            if func.attrs is not None and int(func.attrs.get("tirx.is_scheduled", 0)):
                if report is not None:
                    report.setdefault(name, "database")
                continue
            taken, sch = first_rule(func, target, rules)
            if sch is not None:
                updated[gvar] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
            if report is not None:
                report[name] = taken
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod

    return transform
