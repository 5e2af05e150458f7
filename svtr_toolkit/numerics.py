"""Fixed test inputs and the comparison of two model outputs: shared by export, build and bench."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def random_batch(shape, seed: int = 0) -> np.ndarray:
    """float32 inputs uniform in the preprocessed range [-1, 1], the same every run for a seed."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, tuple(shape)).astype(np.float32)


@dataclass
class Parity:
    rows: int
    steps: int
    max_abs_diff: float
    cosine: float
    argmax_agreement: float  # fraction of (row, time step) pairs with the same class

    def line(self, engine_name: str, reference: str = "onnxruntime fp32") -> str:
        return (
            f"parity {engine_name} vs {reference} ({self.rows} rows x {self.steps} steps): "
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
