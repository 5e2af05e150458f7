"""The rule interface: one small object per kernel class, tried in order (as TVM's dlight)."""
from __future__ import annotations


class CpuRule:
    """A default schedule for one class of CPU kernel.

    ``schedule(sch, blocks, target)`` gets a fresh schedule of the kernel and its normalised
    blocks (dlight's ``normalize_prim_func``); it returns False when the kernel is not of its
    class, and True after scheduling it in place. A schedule primitive that refuses the kernel
    (TVM's ``ScheduleError``) also means "not of this class"; any other exception is a bug in
    the rule and is raised, not passed to the next rule.
    """

    name = "rule"

    def schedule(self, sch, blocks, target) -> bool:
        raise NotImplementedError

    def apply(self, func, target):
        """A scheduled copy of ``func``, or None when this rule does not apply."""
        from tvm import s_tir
        from tvm.s_tir import ScheduleError
        from tvm.s_tir.dlight.analysis import normalize_prim_func

        # Without the dataflow check: vectorising the spatial loop under a reduction (the
        # register tile inside the k loop) is sound but fails the check's block conditions,
        # which is also why MetaSchedule applies its vectorisation in a post-processor.
        sch = s_tir.Schedule(func, enable_check=False)
        blocks = normalize_prim_func(sch)
        if blocks is None:
            return None
        try:
            return sch if self.schedule(sch, blocks, target) else None
        except ScheduleError:  # a schedule primitive refused this kernel: it is not of this class
            return None
