"""The combine rule shared with the Rust aggregator (docs/models.md), and the accuracy tables built from it.

Top-k of one reply: the k largest probabilities, ties broken by the lower class index.
Vote: score[c] = sum over replies, in family order, of weight * the reply's probability for c (float64; weight 1
unless the manifest gives the variant a `vote_weight`; classes a reply does not list add 0); answer = argmax, the
lowest index winning ties.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np


def topk_mask(probs: np.ndarray, k: int) -> np.ndarray:
    """Boolean [N, classes] mask of each row's top-k (stable: lower class index first among equal values)."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    mask = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def vote(replies: list[np.ndarray], k: int | None = None, weights: list[float] | None = None) -> np.ndarray:
    """Answers for each sample from the replies (float32 [N, classes] each, family order); k=None: full vote.

    `weights[i]` multiplies reply i (float64 product, as in Rust: f64::from(p) * w); None: all 1.
    """
    if not replies:
        raise ValueError("vote needs at least one reply")
    if weights is not None and len(weights) != len(replies):
        raise ValueError(f"{len(weights)} weights for {len(replies)} replies")
    score = np.zeros(replies[0].shape, dtype=np.float64)
    for i, probs in enumerate(replies):
        p64 = probs.astype(np.float64)
        if k is not None:
            p64 = np.where(topk_mask(probs, k), p64, 0.0)
        score += p64 if weights is None else np.float64(weights[i]) * p64
    return np.argmax(score, axis=1)  # first maximum = lowest class index


def fit_weights(probs: list[np.ndarray], labels: np.ndarray, steps: int = 400, digits: int = 4) -> list[float]:
    """Vote weights that minimise the log loss of the weighted mean of `probs` (validation data).

    Exponentiated-gradient descent on the simplex from uniform weights (deterministic), then scaled so the
    largest weight is 1 and rounded to `digits` decimals: the manifest stores exactly the numbers every vote uses.
    """
    n = len(probs)
    p = np.stack([q.astype(np.float64)[np.arange(len(labels)), labels] for q in probs], axis=1)  # [N, n]
    w = np.full(n, 1.0 / n)
    for _ in range(steps):
        mix = p @ w
        grad = -(p / np.maximum(mix, 1e-12)[:, None]).mean(0)
        w = w * np.exp(-0.5 * grad)
        w /= w.sum()
    w = w / w.max()
    return [max(round(float(v), digits), 10.0 ** -digits) for v in w]


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of correct answers."""
    return float((pred == labels).mean())


def subsets(names: list[str]) -> list[tuple[int, ...]]:
    """Every non-empty subset as index tuples: by size, then lexicographic in family order."""
    return [c for r in range(1, len(names) + 1) for c in combinations(range(len(names)), r)]


def subset_table(names: list[str], probs: list[np.ndarray], labels: np.ndarray,
                 weights: list[float] | None = None) -> list[dict]:
    """Manifest rows: each subset's full-vote accuracy and its top-k accuracies for k = 1..classes/2."""
    classes = probs[0].shape[1]
    rows = []
    for sub in subsets(names):
        replies = [probs[i] for i in sub]
        w = None if weights is None else [weights[i] for i in sub]
        rows.append({
            "variants": [names[i] for i in sub],
            "accuracy": round(accuracy(vote(replies, weights=w), labels), 6),
            "topk_accuracy": [round(accuracy(vote(replies, k, w), labels), 6) for k in range(1, classes // 2 + 1)],
        })
    return rows
