"""Where an engine runs: the host CPU (llvm), an NVIDIA GPU (cuda) or an Iluvatar MR-V100 (IGIE).

A target is resolved once, at build time, into a plain JSON-able description that the
engine's metadata records; staleness checks compare these descriptions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ToolkitError

TARGET_CHOICES = ("auto", "llvm", "cuda", "iluvatar")


@dataclass(frozen=True)
class BuildTarget:
    name: str  # "llvm", "cuda" or "iluvatar"
    spec: dict  # TVM target as a dict; {} for iluvatar (the IGIE adapter builds its own)
    description: str

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.spec)

    def device(self):
        import tvm

        if self.name == "llvm":
            use_all_cpu_cores()
        dev = tvm.cpu(0) if self.name == "llvm" else tvm.cuda(0)
        if self.name != "llvm" and not dev.exist:
            raise ToolkitError(f"this engine needs a {self.name} device, and TVM sees none on this machine")
        return dev


def use_all_cpu_cores() -> int:
    """Size TVM's CPU thread pool to every core this process may run on; returns the count.

    Unless told otherwise, TVM's runtime halves the logical CPU count on x86 on the
    assumption that half are hyper-threads. On a VM whose vCPUs are whole cores (this
    2-core machine) that runs every kernel on one thread: half the throughput. A
    TVM_NUM_THREADS set by the user wins. The variable is also exported, so worker
    processes (MetaSchedule's runner) time kernels with the same pool.
    """
    import tvm

    if os.environ.get("TVM_NUM_THREADS"):
        return int(os.environ["TVM_NUM_THREADS"])
    cores = sorted(os.sched_getaffinity(0))
    os.environ["TVM_NUM_THREADS"] = str(len(cores))
    # -3: every worker may run on all the listed cores (no one-core-per-thread pinning);
    # this also resizes a pool that an earlier call already started.
    tvm.get_global_func("runtime.config_threadpool")(-3, len(cores), [str(c) for c in cores])
    return len(cores)


def igie_available() -> bool:
    """The IGIE build of TVM carries Relay and its ONNX importer; Apache TVM 0.27 has neither."""
    try:
        from tvm.relay.import_model import import_model_to_igie  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_available() -> bool:
    import tvm

    try:
        return bool(tvm.runtime.enabled("cuda") and tvm.cuda(0).exist)
    except Exception:  # a CUDA runtime without a driver raises instead of answering False
        return False


def host_cpu_target() -> BuildTarget:
    import tvm

    mcpu = tvm.target.codegen.llvm_get_system_cpu()
    cores = len(os.sched_getaffinity(0))
    spec = {"kind": "llvm", "mcpu": mcpu, "num-cores": cores}
    return BuildTarget("llvm", spec, f"host CPU (llvm, mcpu={mcpu}, {cores} cores)")


def cuda_target(arch: str | None = None) -> BuildTarget:
    import tvm

    if arch is None:
        if not cuda_available():
            raise ToolkitError("target cuda: TVM sees no CUDA device (set SVTR_CUDA_ARCH=sm_XX to cross-compile)")
        major, minor = tvm.cuda(0).compute_version.split(".")
        arch = f"sm_{major}{minor}"
    spec = {"kind": "cuda", "arch": arch, "host": {"kind": "llvm"}}
    return BuildTarget("cuda", spec, f"NVIDIA GPU (cuda, {arch})")


def iluvatar_target() -> BuildTarget:
    if not igie_available():
        raise ToolkitError("target iluvatar needs the IGIE build of TVM (tvm.relay.import_model); it is not installed")
    return BuildTarget("iluvatar", {"kind": "iluvatar", "model": "MR"}, "Iluvatar MR-V100 (IGIE)")


def select_target(name: str) -> BuildTarget:
    """Resolve --target; ``auto`` prefers IGIE, then a visible CUDA device, then the host CPU."""
    if name not in TARGET_CHOICES:
        raise ToolkitError(f"unknown target '{name}' (choose from {', '.join(TARGET_CHOICES)})")
    if name == "auto":
        if igie_available():
            return iluvatar_target()
        if cuda_available():
            return cuda_target()
        return host_cpu_target()
    if name == "llvm":
        return host_cpu_target()
    if name == "cuda":
        return cuda_target(os.environ.get("SVTR_CUDA_ARCH") or None)
    return iluvatar_target()
