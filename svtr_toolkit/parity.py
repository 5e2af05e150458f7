"""Engine vs onnxruntime fp32 on the same inputs, summarised in one line."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backends import Backend, OrtBackend


@dataclass
class Parity:
    rows: int
    steps: int
    max_abs_diff: float
    cosine: float
    argmax_agreement: float  # fraction of (row, time step) pairs with the same class

    def line(self, engine_name: str) -> str:
        return (
            f"parity {engine_name} vs onnxruntime fp32 ({self.rows} rows x {self.steps} steps): "
            f"max|diff| {self.max_abs_diff:.3g}, cosine {self.cosine:.6f}, "
            f"argmax agreement {100 * self.argmax_agreement:.2f}%"
        )


def compare(engine_out: np.ndarray, reference_out: np.ndarray) -> Parity:
    a = engine_out.astype(np.float64)
    b = reference_out.astype(np.float64)
    flat_a, flat_b = a.ravel(), b.ravel()
    denom = np.linalg.norm(flat_a) * np.linalg.norm(flat_b)
    cosine = float(flat_a @ flat_b / denom) if denom else float(np.array_equal(flat_a, flat_b))
    return Parity(
        rows=a.shape[0],
        steps=a.shape[1] if a.ndim == 3 else 1,
        max_abs_diff=float(np.max(np.abs(a - b))),
        cosine=cosine,
        argmax_agreement=float(np.mean(a.argmax(-1) == b.argmax(-1))),
    )


def default_inputs(shape, seed: int = 0) -> np.ndarray:
    """Inputs in the preprocessed range [-1, 1], the same every run."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32)


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
        inputs = default_inputs(engine.input_shape)
    reference = OrtBackend(onnx_path)
    return compare(run_padded(engine, inputs), reference.run(inputs))
