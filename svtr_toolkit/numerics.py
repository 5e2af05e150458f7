"""Fixed test inputs and the comparison of two model outputs: shared by export, build and bench."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def random_batch(shape, seed: int = 0) -> np.ndarray:
    """float32 inputs uniform in the preprocessed range [-1, 1], the same every run for a seed."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, tuple(shape)).astype(np.float32)


# A time step is decided when the reference's two most likely classes differ by more than this
# in log-probability (a 1 % ratio): closer than that, a reduced precision may resolve the tie
# either way (bf16 keeps 8 significant bits; on SVTR's seeded export every bf16 flip measured
# was under 0.006: docs/benchmarks/amd-epyc-zen4.md). A model with larger logits moves its gaps
# more, so this is a figure beside the plain agreement, not a verdict.
DECIDED_GAP = 0.01


@dataclass
class Parity:
    rows: int
    steps: int
    max_abs_diff: float
    cosine: float
    argmax_agreement: float  # fraction of (row, time step) pairs with the same class
    # the same over the decided steps (the reference's top-two log-probability gap over
    # DECIDED_GAP), and their share of all steps; None where the outputs are not probabilities
    decided_agreement: float | None = None
    decided_share: float | None = None

    def line(self, engine_name: str, reference: str = "onnxruntime fp32") -> str:
        return (
            f"parity {engine_name} vs {reference} ({self.rows} rows x {self.steps} steps): "
            f"max|diff| {self.max_abs_diff:.3g}, cosine {self.cosine:.6f}, "
            f"argmax agreement {100 * self.argmax_agreement:.2f}%{self.decided_words()}"
        )

    def decided_words(self) -> str:
        """", 100.00% on the 93.8% of steps decided by a log-probability gap over 0.01" where
        the agreement is not whole and the decided steps are known; else ""."""
        if self.argmax_agreement == 1 or self.decided_agreement is None:
            return ""
        return (f", {100 * self.decided_agreement:.2f}% on the {100 * self.decided_share:.1f}% of steps "
                f"decided by a log-probability gap over {DECIDED_GAP}")


def compare(engine_out: np.ndarray, reference_out: np.ndarray) -> Parity:
    a = engine_out.astype(np.float64)
    b = reference_out.astype(np.float64)
    flat_a, flat_b = a.ravel(), b.ravel()
    denom = np.linalg.norm(flat_a) * np.linalg.norm(flat_b)
    cosine = float(flat_a @ flat_b / denom) if denom else float(np.array_equal(flat_a, flat_b))
    same = a.argmax(-1) == b.argmax(-1)
    decided = decided_steps(b)
    decided_agreement = decided_share = None
    if decided is not None:
        decided_agreement = float(np.mean(same[decided])) if decided.any() else 1.0
        decided_share = float(np.mean(decided))
    return Parity(
        rows=a.shape[0],
        steps=a.shape[1] if a.ndim == 3 else 1,
        max_abs_diff=float(np.max(np.abs(a - b))),
        cosine=cosine,
        argmax_agreement=float(np.mean(same)),
        decided_agreement=decided_agreement,
        decided_share=decided_share,
    )


def decided_steps(probabilities: np.ndarray) -> np.ndarray | None:
    """Per step, whether its two most likely classes differ by more than DECIDED_GAP in
    log-probability; None unless the last axis holds probability distributions (a CTC
    recogniser's softmax output) with at least two classes."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape[-1] < 2 or p.min() < 0 or not np.allclose(p.sum(-1), 1.0, atol=1e-3):
        return None
    top2 = np.sort(np.partition(p, -2, axis=-1)[..., -2:], axis=-1)
    with np.errstate(divide="ignore"):
        gap = np.log(top2[..., 1]) - np.log(top2[..., 0])
    return gap > DECIDED_GAP
