"""Length bias of the MCQ (CheXalign's concern), on questions whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from nast.evaluate.metrics import length_bias


def test_length_strata_by_hand():
    hits = np.array([1, 0, 1, 1, 0], bool)
    lengths = np.array([[5, 3, 3, 2],    # correct A strictly longest, rank 3, hit
                        [1, 2, 3, 4],    # correct D strictly longest, rank 3, miss
                        [4, 4, 1, 1],    # correct A ties for longest: neither, rank 2, hit
                        [2, 3, 4, 5],    # correct A strictly shortest, rank 0, hit
                        [3, 3, 3, 3]])   # all equal: neither, rank 0, miss
    out = length_bias(hits, lengths, [0, 3, 0, 0, 1])
    assert out["longest_acc"] == 0.5 and out["n_longest"] == 2
    assert out["shortest_acc"] == 1.0 and out["n_shortest"] == 1
    assert out["by_rank"] == {"0": 0.5, "2": 1.0, "3": 0.5} and out["n_by_rank"] == {"0": 2, "2": 1, "3": 2}
    assert out["length_controlled_acc"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_a_pure_length_preference_is_exposed():
    """A 'model' that always picks the longest option: perfect when the answer is longest, zero when
    shortest; the length-controlled accuracy is the mean over the strata, not the raw accuracy."""
    rng = np.random.default_rng(0)
    lengths = np.stack([rng.permutation(4) for _ in range(200)]) + 5  # distinct lengths, shuffled per question
    correct = rng.integers(0, 4, 200)
    hits = lengths.argmax(1) == correct
    out = length_bias(hits, lengths, correct)
    assert out["longest_acc"] == 1.0 and out["shortest_acc"] == 0.0
    assert out["length_controlled_acc"] == pytest.approx(0.25)
    assert length_bias(np.zeros(0, bool), np.zeros((0, 4)), [])["n_longest"] == 0
