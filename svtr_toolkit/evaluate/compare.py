"""Is an accuracy change real? Two evaluation reports, paired sample by sample.

Two runs on the same data differ on a few samples: the ones B gets right and A wrong (gained)
and the reverse (lost). Under "no difference" each such discordant sample is a fair coin, so
the exact two-sided McNemar test is a binomial test on gained vs lost.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from math import comb

from ..errors import ToolkitError


def mcnemar_exact(gained: int, lost: int) -> float:
    """Exact two-sided McNemar p-value: P(a split at least this uneven | p = 1/2) over gained + lost."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(gained, lost) + 1))
    return min(1.0, 2 * tail / 2 ** n)


@dataclass
class Paired:
    name: str
    samples: int
    correct_a: int
    correct_b: int
    gained: int  # B right, A wrong
    lost: int  # A right, B wrong

    @property
    def net(self) -> int:
        return self.gained - self.lost

    @property
    def p_value(self) -> float:
        return mcnemar_exact(self.gained, self.lost)


def load_predictions(path: str) -> dict:
    """subset name -> {key: (label, correct)} from an inference.py --report."""
    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except OSError as exc:
        raise ToolkitError(f"cannot read {path}: {exc.strerror}")
    except ValueError as exc:
        raise ToolkitError(f"{path} is not JSON: {exc}")
    predictions = (report.get("accuracy") or {}).get("predictions") if isinstance(report, dict) else None
    if not predictions:
        raise ToolkitError(f"{path} has no per-sample predictions (an inference.py --report of an accuracy run "
                           f"made by this version is needed)")
    return {name: {s["key"]: (s["label"], bool(s["correct"])) for s in samples}
            for name, samples in predictions.items()}


def pair(a: dict, b: dict, a_name="A", b_name="B") -> list:
    """One ``Paired`` per subset, in A's order; the two runs must cover the same samples."""
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ToolkitError(f"{a_name} and {b_name} are not on the same data: subset(s) in only one: {', '.join(only)}")
    rows = []
    for name, samples_a in a.items():
        samples_b = b[name]
        if set(samples_a) != set(samples_b):
            raise ToolkitError(f"{a_name} and {b_name} are not on the same data: subset {name} has "
                               f"{len(set(samples_a) ^ set(samples_b))} sample(s) in only one")
        differ = [k for k in samples_a if samples_a[k][0] != samples_b[k][0]]
        if differ:
            raise ToolkitError(f"{a_name} and {b_name} are not on the same data: subset {name}, {differ[0]} has "
                               f"label {samples_a[differ[0]][0]!r} in one and {samples_b[differ[0]][0]!r} in the other")
        gained = sum(1 for k, (_, ok) in samples_a.items() if not ok and samples_b[k][1])
        lost = sum(1 for k, (_, ok) in samples_a.items() if ok and not samples_b[k][1])
        rows.append(Paired(name, len(samples_a), sum(ok for _, ok in samples_a.values()),
                           sum(ok for _, ok in samples_b.values()), gained, lost))
    return rows


def pooled(rows: list) -> Paired:
    return Paired("pooled", *(sum(getattr(r, f) for r in rows) for f in ("samples", "correct_a", "correct_b",
                                                                        "gained", "lost")))
