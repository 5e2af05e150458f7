"""The host CPU through LLVM: default schedule rules, refined by a tuning database where one
fits; convolutions in NHWC; the CPU's features taken from its own flags."""
from __future__ import annotations

from ...errors import ToolkitError

KIND = "llvm"
TUNED = True


def available() -> bool:
    return True


def resolve(remote=None):
    """LLVM's CPU name (its cost model) plus every feature the CPU's flags show, switched on
    or off explicitly: the name alone can hide features a VM has or claim ones it lacks.
    ``remote`` (an ``rpc.RemoteDevice``): that device's CPU, as its server described it."""
    import tvm

    from ...cpu_features import host

    if remote is None:
        cpu, mcpu, where = host(), tvm.target.codegen.llvm_get_system_cpu(), "host CPU"
    else:
        cpu, mcpu, where = remote.cpu, remote.info.get("mcpu") or "generic", f"remote CPU {remote.info.get('hostname')}"
        here = host().arch
        if cpu.arch != here:
            raise ToolkitError(f"the remote is {cpu.arch} and this machine {here}: building across architectures "
                               f"needs a cross toolchain, which this toolkit does not set up yet; build on a "
                               f"{cpu.arch} machine (or on the device) and run there")
    spec = {"kind": KIND, "mcpu": mcpu, "num-cores": cpu.cores, "mattr": cpu.llvm_mattr()}
    return spec, f"{where} (llvm, mcpu={mcpu}, {cpu.describe()}, {cpu.cores} cores)"


def lowering_passes(target) -> list:
    """TVM's CPU pipeline up to scheduling (legalise + fuse), after the toolkit's rewrites: the
    network channels-last, then the fast math forms (after it: ConvertLayout cannot see into
    them) and chains of constant shifts and scales folded, window taps that read only padding
    dropped, pointwise convolutions as matmuls, and the weights of matmuls and convolutions in
    register-tile panels (``relax_passes``): the module MetaSchedule extracts its tasks from
    and applies its database to."""
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from ..relax_passes import (bf16_products, bf16_rounding, canonical_elementwise, constant_chains,
                                dead_window_taps, fast_math, fp16_matmuls, fused_attention, fused_layer_norm,
                                network_to_nhwc, pack_weights, pointwise_convs_as_matmuls)

    return [canonical_elementwise(), network_to_nhwc(), fast_math(), relax.transform.FoldConstant(),
            constant_chains(), dead_window_taps(), pointwise_convs_as_matmuls(), relax.transform.FoldConstant(),
            bf16_products(target), relax.transform.FoldConstant(), fp16_matmuls(target), fused_attention(target),
            bf16_rounding(), fused_layer_norm(), pack_weights(target)] \
        + cpu.legalize_passes(target)


def lower(mod, target):
    """``mod`` through ``lowering_passes``: its kernels as the build names them, unscheduled."""
    import tvm

    with target:
        return tvm.transform.Sequential(lowering_passes(target))(mod)


def pipeline(target, database=None, report: dict | None = None):
    """TVM's default CPU pipeline with ``lowering_passes``, then the MetaSchedule ``database``
    (when given) on the kernels it has records for and the default schedule rules on the rest.
    ``report`` receives {kernel: "database", a rule's name, or None}."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from ..schedule_rules import ApplyRules

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        passes = cpu.library_dispatch_passes(target) + lowering_passes(target)
        if database is not None:
            passes.append(relax.transform.MetaScheduleApplyDatabase(enable_warning=False))
        passes.append(ApplyRules(report=report))
        passes += cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
        with target:
            if database is not None:
                with database:
                    return tvm.transform.Sequential(passes)(mod)
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def precision_note(spec: dict, precision: str, accumulate: dict | None = None) -> str | None:
    """What a precision means on this CPU, when it is not what the name suggests
    (``accumulate``: the build's K-chunked fp16 setting, None when off)."""
    from ..arithmetic import has_bf16_matrix_arithmetic

    if precision == "bf16":
        if has_bf16_matrix_arithmetic(spec):
            return None
        return ("this CPU has no bf16 arithmetic the toolkit uses (AMX tiles or AVX-512 BF16 dot products): bf16 here "
                "means bf16 values (weights and activations rounded to bf16) in fp32 arithmetic, about as fast as an "
                "fp32 engine")
    if precision != "fp16":
        return None
    from ..arithmetic import has_fp16_arithmetic

    fp16_cpu = has_fp16_arithmetic(spec)
    if accumulate is None:
        return (("this CPU has no fp16 arithmetic" if not fp16_cpu else "the K-chunked fp16 plan is off")
                + ": fp16 here means fp16 values (the operands of the products by weights rounded to fp16) in fp32 "
                  "arithmetic, about as fast as an fp32 engine, not faster")
    if not fp16_cpu:
        return ("this CPU has no fp16 arithmetic: the fp16 operations are emulated (every one widened to fp32 and "
                "rounded back); such an engine checks the numerics of an fp16 CPU and is much slower than an fp32 engine")
    return None


def arithmetic(spec: dict, precision: str, accumulate: dict | None = None) -> str:
    """What an engine of ``precision`` computes its matrix products in on this CPU, in words;
    "emulated" when the precision's values are computed in fp32 arithmetic."""
    from ..arithmetic import AMX_BF16, AVX512_BF16, bf16_matrix_instructions, has_fp16_arithmetic

    if precision == "fp32":
        return "fp32"
    if precision == "fp16":
        if accumulate is None:
            return "fp32 (fp16 values: emulated)"
        return ("fp16 products by weights (fp16 sums over K-chunks, fp32 across), fp32 elsewhere"
                if has_fp16_arithmetic(spec) else "fp16 products by weights (every fp16 operation emulated), fp32 elsewhere")
    instructions = bf16_matrix_instructions(spec)
    if instructions == AMX_BF16:
        return "bf16 matrix products (AMX tiles, fp32 sums), fp32 elsewhere"
    if instructions == AVX512_BF16:
        return "bf16 matrix products (AVX-512 BF16 dot products, fp32 sums), fp32 elsewhere"
    return "fp32 (bf16 values: emulated)"
