"""What the benchmark ran on: CPU model, flags, cores and library versions."""
from __future__ import annotations

import os
import platform

import numpy as np


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags(wanted=("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")) -> list:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def _openvino_version():
    from .contenders import import_openvino

    ov, _ = import_openvino()
    return ov.__version__.split("-")[0] if ov is not None else None


def machine_info() -> dict:
    import onnxruntime
    import tvm

    return {
        "cpu": cpu_model_name(),
        "cores_available": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "tvm": tvm.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": _openvino_version(),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
