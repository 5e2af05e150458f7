"""Is an accuracy change real? Two evaluation reports, paired sample by sample.

Two runs on the same data differ on a few samples: the ones B gets right and A wrong (gained)
and the reverse (lost). Under "no difference" each such discordant sample is a fair coin, so
the exact two-sided McNemar test is a binomial test on gained vs lost.

Samples pair by subset and image key: the data is the same when the keys are. Two runs may
score labels by different rules (SVTR lower-cases labels, PP-OCRv4 keeps their case): then
their labels differ, or one run rejects a label the other keeps, and the comparison says so
instead of calling the data different.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from math import comb

from ..errors import ToolkitError
from ..files import require_file


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

    def acc(self, correct: int) -> float | None:
        """A share of the paired samples; None for a subset none of whose samples both runs scored."""
        return correct / self.samples if self.samples else None


# The report's config entries that decide what a label becomes (CTCLabelEncode) and how it is
# compared (RecMetric), each with how to say that two runs differ in it.
_RULES = {
    "lowercase": lambda a, b: ", ".join(f"{run} {'lower-cases labels' if lower else 'keeps their case'}"
                                        for run, lower in (("A", a), ("B", b))),
    "characters": lambda a, b: f"dictionaries of {a} and {b} characters",
    "dictionary_sha256": lambda a, b: "other dictionaries of as many characters",
    "max_text_length": lambda a, b: f"max_text_length {a} and {b}",
    "ignore_space": lambda a, b: f"ignore_space {a} and {b}",
    "is_filter": lambda a, b: f"is_filter {a} and {b}",
}


@dataclass
class Run:
    """One inference.py --report: per subset, {image key: (label, correct)}, and its label rules."""

    path: str
    predictions: dict
    rules: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)  # the report's engine entry: runtime, version, precision

    def describe(self) -> str:
        """What ran: the runtime, its version and what it computed in (reports from before they
        were recorded: the backend's name)."""
        engine = self.engine
        if engine.get("runtime"):
            precision = engine.get("precision")
            asked = "its default precision" if precision in (None, "default") else f"precision {precision}"
            return (f"{engine['runtime']} {engine.get('version') or ''}".rstrip()
                    + f", {asked}, computes in {engine.get('computes_in')}")
        return str(engine.get("backend") or "runtime not recorded")


def _malformed(path: str, what: str) -> ToolkitError:
    return ToolkitError(f"{path} is not an inference.py --report of an accuracy run: {what}")


def load_report(path: str) -> Run:
    """Read and check a report; any other JSON is one error saying what is wrong with it."""
    require_file(path, "report")
    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except OSError as exc:
        raise ToolkitError(f"cannot read {path}: {exc.strerror}")
    except ValueError as exc:
        raise ToolkitError(f"{path} is not JSON: {exc}")
    if not isinstance(report, dict):
        raise _malformed(path, f"the top level is a JSON {type(report).__name__}, not an object")
    accuracy = report.get("accuracy")
    predictions = accuracy.get("predictions") if isinstance(accuracy, dict) else None
    if not predictions:
        raise ToolkitError(f"{path} has no per-sample predictions (an inference.py --report of an accuracy run "
                           f"made by this version is needed)")
    if not isinstance(predictions, dict):
        raise _malformed(path, "accuracy.predictions is not a mapping of subset names")
    runs = {}
    for name, samples in predictions.items():
        if not isinstance(samples, list):
            raise _malformed(path, f"accuracy.predictions[{name!r}] is not a list of samples")
        rows = {}
        for number, sample in enumerate(samples):
            if not (isinstance(sample, dict) and isinstance(sample.get("key"), str)
                    and isinstance(sample.get("label"), str) and isinstance(sample.get("correct"), bool)):
                raise _malformed(path, f"sample {number} of subset {name!r} is not "
                                       f"{{\"key\": text, \"label\": text, \"correct\": true|false}}: {sample!r:.80}")
            if sample["key"] in rows:
                raise _malformed(path, f"subset {name!r} lists {sample['key']} twice")
            rows[sample["key"]] = (sample["label"], sample["correct"])
        runs[name] = rows
    config = report.get("config")
    rules = {key: config.get(key) for key in _RULES} if isinstance(config, dict) else {}
    engine = report.get("engine") if isinstance(report.get("engine"), dict) else {}
    return Run(path, runs, rules, engine)


def rule_differences(a: Run, b: Run) -> list:
    """How the two runs' label rules differ, in words; empty when they are the same (or unknown)."""
    differ = [key for key in _RULES if a.rules.get(key) is not None and b.rules.get(key) is not None
              and a.rules[key] != b.rules[key]]
    if "characters" in differ and "dictionary_sha256" in differ:  # other sizes already say it
        differ.remove("dictionary_sha256")
    return [_RULES[key](a.rules[key], b.rules[key]) for key in differ]


def pair(a: Run, b: Run) -> tuple[list, list]:
    """(one ``Paired`` per subset in A's order, notes). The runs must cover the same subsets and,
    under the same label rules, the same samples with the same labels; under different rules the
    samples both scored are paired and the notes say what the rules changed."""
    if set(a.predictions) != set(b.predictions):
        only = sorted(set(a.predictions) ^ set(b.predictions))
        raise ToolkitError(f"{a.path} and {b.path} are not on the same data: subset(s) in only one: {', '.join(only)}")
    differences = rule_differences(a, b)
    rows, one_sided, relabelled = [], 0, []
    for name, samples_a in a.predictions.items():
        samples_b = b.predictions[name]
        keys = [k for k in samples_a if k in samples_b]
        if not differences and (len(keys) != len(samples_a) or len(keys) != len(samples_b)):
            raise ToolkitError(f"{a.path} and {b.path} are not on the same data: subset {name} has "
                               f"{len(set(samples_a) ^ set(samples_b))} sample(s) in only one")
        one_sided += len(samples_a) + len(samples_b) - 2 * len(keys)
        differ = [k for k in keys if samples_a[k][0] != samples_b[k][0]]
        if differ and not differences:
            raise ToolkitError(f"{a.path} and {b.path} are not on the same data: subset {name}, {differ[0]} has "
                               f"label {samples_a[differ[0]][0]!r} in one and {samples_b[differ[0]][0]!r} in the other "
                               f"(and both runs score labels by the same rules)")
        relabelled += [(name, k, samples_a[k][0], samples_b[k][0]) for k in differ]
        right_a = {k for k in keys if samples_a[k][1]}
        right_b = {k for k in keys if samples_b[k][1]}
        rows.append(Paired(name, len(keys), len(right_a), len(right_b), len(right_b - right_a), len(right_a - right_b)))
    notes = []
    if differences:
        notes.append(f"note: A and B score labels by different rules ({'; '.join(differences)}): samples are paired "
                     f"by image key, each run scored against its own label")
        if relabelled:
            name, key, label_a, label_b = relabelled[0]
            notes.append(f"note: {len(relabelled)} paired sample(s) have different labels under the two rules, "
                         f"e.g. {name} {key}: {label_a!r} (A) and {label_b!r} (B)")
        if one_sided:
            notes.append(f"note: {one_sided} sample(s) were evaluated by one run only (the other's rules rejected "
                         f"their label) and are left out of the pairing")
    return rows, notes


def pooled(rows: list) -> Paired:
    return Paired("pooled", *(sum(getattr(r, f) for r in rows) for f in ("samples", "correct_a", "correct_b",
                                                                        "gained", "lost")))
