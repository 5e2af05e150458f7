"""Engine vs onnxruntime fp32 on the same inputs, summarised in one line."""
from __future__ import annotations

import numpy as np

from ..errors import ToolkitError
from ..numerics import Parity, compare
from ..runtime import Backend, OrtBackend

__all__ = ["Parity", "check", "compare", "run_padded"]


def run_padded(backend: Backend, inputs: np.ndarray) -> np.ndarray:
    """Run any number of rows through a fixed-batch backend, padding the last batch."""
    batch = backend.input_shape[0] or len(inputs)
    outputs = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)]) if len(chunk) < batch else chunk
        outputs.append(backend.run(padded)[: len(chunk)])
    return np.concatenate(outputs)


def check(engine: Backend, onnx_path: str, inputs: np.ndarray | None = None) -> Parity:
    if inputs is None:
        inputs = engine.timing_input()  # random_batch at the engine's shape; batch 1 where it is free
    reference = OrtBackend(onnx_path)
    if any(r is not None and r != e for r, e in zip(reference.input_shape[1:], engine.input_shape[1:])):
        raise ToolkitError(f"the engine takes input {list(engine.input_shape)} and {onnx_path} "
                           f"{list(reference.input_shape)}: not the model the engine was built from")
    ours, theirs = run_padded(engine, inputs), reference.run(inputs)
    if ours.shape != theirs.shape:
        raise ToolkitError(f"the engine outputs {list(ours.shape)} and {onnx_path} {list(theirs.shape)}: "
                           f"not the model the engine was built from")
    return compare(ours, theirs)
