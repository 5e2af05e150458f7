"""An NVIDIA GPU: Relax's default CUDA pipeline (dlight schedules)."""
from __future__ import annotations

import os

from ...errors import ToolkitError

KIND = "cuda"
TUNED = False


def available() -> bool:
    import tvm

    try:
        return bool(tvm.runtime.enabled("cuda") and tvm.cuda(0).exist)
    except Exception:  # a CUDA runtime without a driver raises instead of answering False
        return False


def resolve(remote=None):
    """The visible device's architecture (the remote's, through ``remote``), or SVTR_CUDA_ARCH
    (sm_XX) to cross-compile."""
    import tvm

    arch = os.environ.get("SVTR_CUDA_ARCH") or None
    if arch is None and remote is not None:
        gpu = remote.session.cuda(0)
        if not gpu.exist:
            raise ToolkitError(f"target cuda: the remote {remote.description} has no CUDA device TVM can see")
        major, minor = gpu.compute_version.split(".")
        arch = f"sm_{major}{minor}"
    if arch is None:
        if not available():
            raise ToolkitError("target cuda: TVM sees no CUDA device (set SVTR_CUDA_ARCH=sm_XX to cross-compile)")
        major, minor = tvm.cuda(0).compute_version.split(".")
        arch = f"sm_{major}{minor}"
    return {"kind": KIND, "arch": arch, "host": {"kind": "llvm"}}, f"NVIDIA GPU (cuda, {arch})"


def pipeline(target, database=None, report=None):
    return "default"
