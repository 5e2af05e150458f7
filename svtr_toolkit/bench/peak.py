"""The machine's measured peak: a large fp32 numpy GEMM on all cores and on one, in a fresh process."""
from __future__ import annotations

import os
import subprocess
import sys

from ..errors import ToolkitError


def gemm_flops(n: int) -> float:
    """FLOPs of an n x n x n matrix product (one multiply-add = 2 FLOPs)."""
    return 2.0 * n ** 3


_GEMM_SNIPPET = """
import sys, time, numpy as np
n, repeats = int(sys.argv[1]), int(sys.argv[2])
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
best = float("inf")
for _ in range(repeats):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
print(2.0 * n ** 3 / best)
"""


def measure_gemm_flops(n: int = 2048, repeats: int = 3, threads: int | None = None) -> float:
    """Best FLOP/s of an n^3 fp32 numpy GEMM, in a fresh process pinned to ``threads`` BLAS threads."""
    env = dict(os.environ)
    if threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    try:
        done = subprocess.run([sys.executable, "-c", _GEMM_SNIPPET, str(n), str(repeats)], env=env,
                              capture_output=True, text=True, check=True, timeout=600)
        return float(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise ToolkitError(f"the GEMM peak probe failed: {exc}")


def measure_peak(cores: int, n: int = 2048, repeats: int = 3) -> dict:
    all_cores = measure_gemm_flops(n, repeats, threads=cores)
    one_core = measure_gemm_flops(n, repeats, threads=1)
    return {"gemm_n": n, "repeats": repeats, "all_cores_flops": all_cores, "one_core_flops": one_core,
            "cores": cores}


def merge_peaks(before: dict, after: dict) -> dict:
    """Best of two probes, keeping both readings."""
    merged = dict(before)
    for key in ("all_cores_flops", "one_core_flops"):
        merged[key] = max(before[key], after[key])
        merged[key + "_probes"] = [before[key], after[key]]
    return merged
