"""Engine vs onnxruntime fp32 on the same inputs, summarised in one line."""
from __future__ import annotations

import numpy as np

from ..numerics import Parity, compare, random_batch
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
        inputs = random_batch(engine.input_shape)
    reference = OrtBackend(onnx_path)
    return compare(run_padded(engine, inputs), reference.run(inputs))
