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
    """``["fp32=a.so", "fp16=b.so"]`` -> [("fp32", "a.so"), ("fp16", "b.so")]. A name may repeat
    for engines of other batches (one contender over the sweep, one line in the plot); the same
    name at one batch is refused once the batches are read (``engine_batches``)."""
    out = []
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise ToolkitError(f"--engine must look like NAME=PATH (e.g. fp16=svtr_bs_32_fp16.so), got '{spec}'")
        if (name, path) in out:
            raise ToolkitError(f"--engine {name}={path} is given twice")
        out.append((name, path))
    return out


def engine_batches(specs) -> list:
    """The batch each engine was built for, from its build description (None where it has none:
    loading it says why); the same name twice at one batch is refused."""
    from ..engine_file import read_engine_metadata

    batches, seen = [], {}
    for name, path in specs:
        meta = read_engine_metadata(path)
        shape = meta.get("input_shape") if isinstance(meta, dict) else None
        batch = shape[0] if isinstance(shape, list) and shape else None
        if batch is not None and (name, batch) in seen:
            raise ToolkitError(f"--engine name '{name}' is given twice for batch {batch}: {seen[name, batch]} and "
                               f"{path}")
        seen[name, batch] = path
        batches.append(batch)
    return batches
