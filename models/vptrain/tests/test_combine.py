"""The combine rule shared with Rust: float64 sums in family order, lowest index wins ties, stable top-k."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vptrain import combine


def test_full_vote_sums_probabilities() -> None:
    a = np.array([[0.6, 0.4, 0.0]], np.float32)
    b = np.array([[0.1, 0.8, 0.1]], np.float32)
    assert combine.vote([a, b]).tolist() == [1]


def test_ties_go_to_the_lowest_class_index() -> None:
    a = np.array([[0.25, 0.25, 0.5], [0.5, 0.5, 0.0]], np.float32)
    b = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], np.float32)
    # Row 0: scores 0.75, 0.75, 0.5 -> class 0. Row 1: 0.5, 0.5, 1.0 -> class 2.
    assert combine.vote([a, b]).tolist() == [0, 2]


def test_topk_selection_is_stable_on_equal_probabilities() -> None:
    p = np.array([[0.2, 0.3, 0.3, 0.2]], np.float32)
    assert combine.topk_mask(p, 1).tolist() == [[False, True, False, False]]
    assert combine.topk_mask(p, 3).tolist() == [[True, True, True, False]]


def test_topk_vote_drops_unlisted_classes() -> None:
    a = np.array([[0.45, 0.35, 0.20]], np.float32)
    b = np.array([[0.05, 0.50, 0.45]], np.float32)
    c = np.array([[0.05, 0.40, 0.55]], np.float32)
    # Full: 0.55, 1.25, 1.20 -> 1. Top-1: a->0 (0.45), b->1 (0.5), c->2 (0.55) -> 2.
    assert combine.vote([a, b, c]).tolist() == [1]
    assert combine.vote([a, b, c], k=1).tolist() == [2]


def test_float64_accumulation_in_family_order() -> None:
    # float32 sums would tie (0.5 + 2^-30 rounds to 0.5) and pick class 0; float64 keeps the tiny votes.
    tiny = np.float32(2.0**-30)
    replies = [np.array([[0.5, 0.5]], np.float32), np.array([[0.0, tiny]], np.float32),
               np.array([[0.0, tiny]], np.float32)]
    f32 = np.zeros(2, np.float32)
    for r in replies:
        f32 += r[0]
    assert f32[0] == f32[1]
    assert combine.vote(replies).tolist() == [1]


def test_subsets_cover_every_non_empty_subset_in_canonical_order() -> None:
    subs = combine.subsets(["a", "b", "c"])
    assert subs == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]


def test_subset_table_matches_direct_votes() -> None:
    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(10), size=200).astype(np.float32) for _ in range(3)]
    labels = rng.integers(0, 10, 200)
    rows = combine.subset_table(["x", "y", "z"], probs, labels)
    assert len(rows) == 7
    last = rows[-1]
    assert last["variants"] == ["x", "y", "z"]
    assert last["accuracy"] == round(combine.accuracy(combine.vote(probs), labels), 6)
    assert len(last["topk_accuracy"]) == 5
    # Top-5 of 10 classes keeps most of the mass: close to, but computed independently of, the full vote.
    assert last["topk_accuracy"][2] == round(combine.accuracy(combine.vote(probs, 3), labels), 6)


VECTOR = Path(__file__).resolve().parents[3] / "crates" / "vp-core" / "testdata" / "weighted-vote.json"


def test_shared_weighted_vote_vector() -> None:
    """The same file is checked by the Rust combiner (crates/vp-core/tests/shared_vote_vector.rs)."""
    cases = json.loads(VECTOR.read_text())["cases"]
    assert len(cases) >= 40
    for case in cases:
        replies = [np.array([case["replies"][i]], np.float32) for i in case["answering"]]
        weights = [case["weights"][i] for i in case["answering"]]
        assert combine.vote(replies, case["k"], weights).tolist() == [case["expected"]], case["note"]
    # The weights matter in the vector: the first case's answer changes with uniform weights.
    first = cases[0]
    uniform = combine.vote([np.array([r], np.float32) for r in first["replies"]], first["k"])
    assert uniform.tolist() != [first["expected"]]


def test_weights_scale_each_reply() -> None:
    a = np.array([[0.6, 0.4]], np.float32)
    b = np.array([[0.45, 0.55]], np.float32)
    assert combine.vote([a, b]).tolist() == [0]
    assert combine.vote([a, b], weights=[1.0, 3.0]).tolist() == [1]
    with pytest.raises(ValueError):
        combine.vote([a, b], weights=[1.0])


def test_fitted_weights_favour_the_better_member() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 2000)
    good = np.full((2000, 10), 0.02, np.float32)
    good[np.arange(2000), labels] = 0.82
    noise = rng.dirichlet(np.ones(10), size=2000).astype(np.float32)
    w = combine.fit_weights([noise, good], labels)
    assert w[1] == 1.0 and w[0] < 0.2
    assert all(round(v, 4) == v and v > 0 for v in w)
    assert combine.fit_weights([good, good], labels) == [1.0, 1.0]
