"""What the benchmark ran on: the CPU (read by ``cpu_features``), cores and library versions."""
from __future__ import annotations

import os
import platform

import numpy as np

from ..cpu_features import host

# the features (LLVM's names) that decide what a contender's arithmetic can run on
NOTED_FEATURES = ("avx2", "fma", "avx512f", "avx512bf16", "avx512fp16", "amx-tile", "amx-bf16",
                  "neon", "fullfp16", "bf16")


def machine_info(versions: dict | None = None) -> dict:
    """The CPU, the cores this process may use and, per runtime, its version (``versions``:
    {name: version or None}; by default every registered contender's)."""
    if versions is None:
        from .contenders import versions as contender_versions

        versions = contender_versions()
    cpu = host()
    return {
        "cpu": cpu.model or platform.processor() or "unknown",
        "cores_available": cpu.cores,
        "cpu_count": os.cpu_count(),
        "cpu_flags": [f for f in NOTED_FEATURES if f in cpu.features],
        "cpu_features": cpu.describe(),
        "versions": versions,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
