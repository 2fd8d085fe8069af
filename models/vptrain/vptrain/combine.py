"""The combine rule shared with the Rust aggregator (docs/models.md), and the accuracy tables built from it.

Top-k of one reply: the k largest probabilities, ties broken by the lower class index.
Vote: score[c] = sum over replies, in family order, of the reply's probability for c (float64; classes a reply
does not list add 0); answer = argmax, the lowest index winning ties.
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


def vote(replies: list[np.ndarray], k: int | None = None) -> np.ndarray:
    """Answers for each sample from the replies (float32 [N, classes] each, family order); k=None: full vote."""
    if not replies:
        raise ValueError("vote needs at least one reply")
    score = np.zeros(replies[0].shape, dtype=np.float64)
    for probs in replies:
        p64 = probs.astype(np.float64)
        if k is not None:
            p64 = np.where(topk_mask(probs, k), p64, 0.0)
        score += p64
    return np.argmax(score, axis=1)  # first maximum = lowest class index


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of correct answers."""
    return float((pred == labels).mean())


def subsets(names: list[str]) -> list[tuple[int, ...]]:
    """Every non-empty subset as index tuples: by size, then lexicographic in family order."""
    return [c for r in range(1, len(names) + 1) for c in combinations(range(len(names)), r)]


def subset_table(names: list[str], probs: list[np.ndarray], labels: np.ndarray) -> list[dict]:
    """Manifest rows: each subset's full-vote accuracy and its top-k accuracies for k = 1..classes/2."""
    classes = probs[0].shape[1]
    rows = []
    for sub in subsets(names):
        replies = [probs[i] for i in sub]
        rows.append({
            "variants": [names[i] for i in sub],
            "accuracy": round(accuracy(vote(replies), labels), 6),
            "topk_accuracy": [round(accuracy(vote(replies, k), labels), 6) for k in range(1, classes // 2 + 1)],
        })
    return rows
