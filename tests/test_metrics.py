"""CTC greedy decoding and PaddleOCR's RecMetric on hand-checked cases."""
import random

import numpy as np
import pytest

from svtr_toolkit.config import DEFAULT_CHARACTERS
from svtr_toolkit.errors import ToolkitError
from svtr_toolkit.evaluate.metrics import RecMetric, ctc_greedy_decode, normalize_text, normalized_edit_distance

CHARS = list(DEFAULT_CHARACTERS)


def probs_for(*paths, steps=25):
    """One-hot-ish probabilities; each path is a string with '-' for the blank."""
    out = np.full((len(paths), steps, len(CHARS) + 1), 0.01, np.float32)
    for n, path in enumerate(paths):
        path = path.ljust(steps, "-")
        for t, ch in enumerate(path):
            out[n, t, 0 if ch == "-" else CHARS.index(ch) + 1] = 0.6
    return out


def levenshtein(a, b):
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def test_ctc_decode_hand_cases():
    got = ctc_greedy_decode(probs_for("hh-ee-ll-ll-oo", "", "aaa", "a-a", "--ab--", "1-22-333"), CHARS)
    assert got == ["hello", "", "a", "aa", "ab", "123"]


def test_ctc_decode_ties_take_the_first_class():
    probs = np.zeros((1, 3, 37), np.float32)
    probs[0, :, [0, 5]] = 0.5  # blank ties with '4' everywhere -> blank
    assert ctc_greedy_decode(probs, CHARS) == [""]


def test_ctc_decode_class_count_mismatch():
    with pytest.raises(ToolkitError, match="37 classes"):
        ctc_greedy_decode(np.zeros((1, 25, 37)), CHARS[:-1])
    with pytest.raises(ToolkitError, match="shape"):
        ctc_greedy_decode(np.zeros((25, 37)), CHARS)


def test_rapidfuzz_matches_paddleocr_definition():
    rng = random.Random(0)
    pairs = [("", ""), ("", "abc"), ("abc", ""), ("hotel", "hostel"), ("kitten", "sitting"), ("a", "a")]
    pairs += [("".join(rng.choices("abc", k=rng.randint(0, 8))), "".join(rng.choices("abc", k=rng.randint(0, 8))))
              for _ in range(300)]
    for a, b in pairs:
        want = levenshtein(a, b) / max(len(a), len(b), 1)
        assert normalized_edit_distance(a, b) == pytest.approx(want, abs=1e-12), (a, b)
    assert normalized_edit_distance("hotel", "hostel") == pytest.approx(1 / 6)


def test_normalize_text():
    assert normalize_text("ho tel ", ignore_space=True) == "hotel"
    assert normalize_text("ho tel", ignore_space=False) == "ho tel"
    assert normalize_text("Ho-tel 5!", ignore_space=True, is_filter=True) == "hotel5"
    # PaddleOCR filters to ASCII alphanumerics first, then lower-cases
    assert normalize_text("\u212aA", ignore_space=True, is_filter=True) == "a"


def test_rec_metric_cases_and_aggregation():
    m = RecMetric(2, ignore_space=True, is_filter=False)
    m.update(0, "ho tel", "hotel")  # spaces ignored -> correct
    m.update(1, "Hotel", "hotel")  # case counts without is_filter -> wrong, distance 1/5
    m.update(1, "hotel", "hostel")  # wrong, 1/6
    m.update(1, "", "abc")  # wrong, 1
    assert (m.subsets[0].n, m.subsets[0].correct, m.subsets[0].acc) == (1, 1, 1.0)
    assert (m.subsets[1].n, m.subsets[1].correct) == (3, 0)
    assert m.subsets[1].norm_edit_dis == pytest.approx(1 - (1 / 5 + 1 / 6 + 1) / 3)
    pooled = m.pooled
    assert (pooled.n, pooled.correct, pooled.acc) == (4, 1, 0.25)
    assert pooled.norm_edit_dis == pytest.approx(1 - (1 / 5 + 1 / 6 + 1) / 4)
    acc, ned, used = m.mean_over_subsets()
    assert used == 2 and acc == pytest.approx(0.5)
    filt = RecMetric(1, ignore_space=True, is_filter=True)
    filt.update(0, "Hotel!", "hotel")
    assert filt.pooled.acc == 1.0


def test_empty_subset_has_no_score():
    m = RecMetric(2)
    m.update(1, "a", "a")
    assert m.subsets[0].acc is None and m.mean_over_subsets() == (1.0, 1.0, 1)
