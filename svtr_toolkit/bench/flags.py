"""The benchmark's own flag values: the batch sweep and the NAME=PATH engines."""
from __future__ import annotations

from ..errors import ToolkitError

DEFAULT_BATCHES = (1, 8, 32, 64)
HEADLINE_BATCH = 32


def parse_batches(text: str) -> list:
    try:
        batches = sorted({int(b) for b in text.split(",") if b.strip()})
    except ValueError:
        batches = []
    if not batches or any(b <= 0 for b in batches):
        raise ToolkitError(f"--batches must be positive integers separated by commas (e.g. 1,8,32,64), got '{text}'")
    return batches


def parse_engine_specs(specs) -> list:
    """``["fp32=a.so", "fp16=b.so"]`` -> [("fp32", "a.so"), ("fp16", "b.so")]."""
    out, seen = [], set()
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise ToolkitError(f"--engine must look like NAME=PATH (e.g. fp16=svtr_bs_32_fp16.so), got '{spec}'")
        if name in seen:
            raise ToolkitError(f"--engine name '{name}' is given twice")
        seen.add(name)
        out.append((name, path))
    return out
