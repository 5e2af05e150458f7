"""The comparison of an engine's output with the reference: argmax agreement over all steps and
over the decided ones (the reference's top two classes apart by more than DECIDED_GAP)."""
import math

import numpy as np

from svtr_toolkit.numerics import DECIDED_GAP, compare, decided_steps


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_decided_steps_are_those_whose_top_two_log_probabilities_are_apart():
    """Against a direct per-step computation with math.log over random distributions whose top
    two logits lie on both sides of the gap."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 30, 37))
    top = logits.argmax(-1)
    # put the runner-up at a gap of 0 .. 2 * DECIDED_GAP below the winner
    runner = (top + 1) % 37
    gaps = rng.uniform(0, 2 * DECIDED_GAP, top.shape)
    np.put_along_axis(logits, runner[..., None], (np.take_along_axis(logits, top[..., None], -1)[..., 0] - gaps)[..., None], -1)
    p = softmax(logits)
    want = np.empty(top.shape, bool)
    for index in np.ndindex(top.shape):
        second, first = sorted(p[index])[-2:]
        want[index] = math.log(first) - math.log(second) > DECIDED_GAP
    got = decided_steps(p)
    assert 0 < want.mean() < 1 and np.array_equal(got, want)


def test_a_flipped_near_tie_counts_against_the_agreement_but_not_the_decided_agreement():
    logits = np.random.default_rng(1).normal(size=(2, 10, 37)) * 4
    # step (0, 0): class 5 wins over the runner-up by a quarter of the gap, a near-tie
    others = logits[0, 0].copy()
    others[5] = -np.inf
    runner = int(others.argmax())
    logits[0, 0, 5] = logits[0, 0, runner] + DECIDED_GAP / 4
    reference = softmax(logits)
    engine = reference.copy()
    engine[0, 0, [5, runner]] = engine[0, 0, [runner, 5]]  # the tie resolved the other way
    parity = compare(engine, reference)
    share = decided_steps(reference).mean()
    assert not decided_steps(reference)[0, 0] and share < 1
    assert parity.argmax_agreement == 1 - 1 / 20
    assert parity.decided_agreement == 1.0 and parity.decided_share == share
    assert "100.00% on the" in parity.line("e")
    # a decided step flipped counts in both
    first, second = np.argsort(reference[1, 3])[-1], np.argsort(reference[1, 3])[-2]
    assert decided_steps(reference)[1, 3]
    engine[1, 3, [first, second]] = engine[1, 3, [second, first]]
    both = compare(engine, reference)
    assert both.argmax_agreement == 1 - 2 / 20 and both.decided_agreement < 1


def test_outputs_that_are_not_probabilities_have_no_decided_steps():
    logits = np.random.default_rng(2).normal(size=(2, 5, 7))
    parity = compare(logits + 0.1, logits)
    assert parity.decided_agreement is None and parity.decided_share is None
    assert "decided" not in parity.line("e")
