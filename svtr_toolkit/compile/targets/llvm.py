"""The host CPU through LLVM: MetaSchedule-tuned kernels, convolutions in NHWC."""
from __future__ import annotations

import os

KIND = "llvm"
TUNED = True


def available() -> bool:
    return True


def resolve():
    import tvm

    mcpu = tvm.target.codegen.llvm_get_system_cpu()
    cores = len(os.sched_getaffinity(0))
    return {"kind": KIND, "mcpu": mcpu, "num-cores": cores}, f"host CPU (llvm, mcpu={mcpu}, {cores} cores)"


def lowering_passes(target) -> list:
    """TVM's CPU pipeline up to scheduling (legalise + fuse), convolutions moved to NHWC first:
    the module MetaSchedule extracts its tasks from and applies its database to."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from ..relax_passes import convs_to_nhwc

    return [convs_to_nhwc()] + cpu.legalize_passes(target)


def pipeline(target, database=None):
    """TVM's default CPU pipeline with ``lowering_passes`` and, when given, the MetaSchedule
    ``database`` applied right after fusion (kernels without a record stay unscheduled)."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        passes = cpu.library_dispatch_passes(target) + lowering_passes(target)
        if database is not None:
            passes.append(relax.transform.MetaScheduleApplyDatabase(enable_warning=False))
        passes += cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
        with target:
            if database is not None:
                with database:
                    return tvm.transform.Sequential(passes)(mod)
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
