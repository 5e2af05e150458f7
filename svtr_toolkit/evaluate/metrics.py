"""CTC greedy decoding and PaddleOCR's RecMetric."""
from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
from rapidfuzz.distance import Levenshtein

from ..errors import ToolkitError

_ALNUM = frozenset(string.digits + string.ascii_letters)


def ctc_greedy_decode(probs: np.ndarray, characters) -> list[str]:
    """PaddleOCR CTCLabelDecode: argmax per step, merge repeats, drop the blank (class 0)."""
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ToolkitError(f"model output must be [N, T, classes], got shape {list(probs.shape)}")
    if probs.shape[2] != len(characters) + 1:
        raise ToolkitError(
            f"model output has {probs.shape[2]} classes but the dictionary has {len(characters)} characters "
            f"+ the CTC blank = {len(characters) + 1}; wrong config for this model?"
        )
    idx = probs.argmax(axis=2)
    keep = idx != 0
    keep[:, 1:] &= idx[:, 1:] != idx[:, :-1]
    table = np.array([""] + list(characters), dtype=object)
    return ["".join(table[row[k]]) for row, k in zip(idx, keep)]


def normalize_text(text: str, ignore_space: bool = True, is_filter: bool = False) -> str:
    """RecMetric's view of a string: spaces out if ignore_space; is_filter keeps [0-9a-zA-Z] then lower-cases."""
    if ignore_space:
        text = text.replace(" ", "")
    if is_filter:
        text = "".join(ch for ch in text if ch in _ALNUM).lower()
    return text


def normalized_edit_distance(pred: str, target: str) -> float:
    """Levenshtein distance / max(len(pred), len(target)), 0 for two empty strings (PaddleOCR's)."""
    return Levenshtein.normalized_distance(pred, target)


@dataclass
class Score:
    n: int = 0
    correct: int = 0
    ned_sum: float = 0.0  # sum of normalised edit distances

    def add(self, pred: str, target: str) -> None:
        self.n += 1
        self.correct += pred == target
        self.ned_sum += normalized_edit_distance(pred, target)

    @property
    def acc(self) -> float | None:
        return self.correct / self.n if self.n else None

    @property
    def norm_edit_dis(self) -> float | None:
        return 1.0 - self.ned_sum / self.n if self.n else None


class RecMetric:
    """PaddleOCR RecMetric, accumulated per subset; pooled = over all samples."""

    def __init__(self, num_subsets: int, ignore_space: bool = True, is_filter: bool = False):
        self.subsets = [Score() for _ in range(num_subsets)]
        self.ignore_space, self.is_filter = ignore_space, is_filter

    def update(self, subset: int, pred: str, target: str) -> None:
        pred = normalize_text(pred, self.ignore_space, self.is_filter)
        target = normalize_text(target, self.ignore_space, self.is_filter)
        self.subsets[subset].add(pred, target)

    def is_correct(self, pred: str, target: str) -> bool:
        """Whether ``update`` counts this pair as an exact match."""
        return normalize_text(pred, self.ignore_space, self.is_filter) == \
            normalize_text(target, self.ignore_space, self.is_filter)

    @property
    def pooled(self) -> Score:
        total = Score()
        for s in self.subsets:
            total.n += s.n
            total.correct += s.correct
            total.ned_sum += s.ned_sum
        return total

    def mean_over_subsets(self) -> tuple[float | None, float | None, int]:
        """PaddleOCR's Avg_N: the plain mean of per-subset figures (subsets with samples)."""
        used = [s for s in self.subsets if s.n]
        if not used:
            return None, None, 0
        return (sum(s.acc for s in used) / len(used), sum(s.norm_edit_dis for s in used) / len(used), len(used))
