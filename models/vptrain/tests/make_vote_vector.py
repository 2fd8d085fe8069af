#!/usr/bin/env python3
"""Writes crates/vp-core/testdata/weighted-vote.json, the weighted-vote test vector shared by pytest and Rust.

Run from models/vptrain: PYTHONPATH=. python tests/make_vote_vector.py. The hand cases state their answers in
the note; the random ones are cross-checked by the Rust test."""
import json
from pathlib import Path

import numpy as np

from vptrain import combine
cases = []
def add(note, classes, weights, replies, answering, k):
    reps = [np.array([r], np.float32) for r in replies]
    sub = [reps[i] for i in answering]
    w = [weights[i] for i in answering]
    exp = int(combine.vote(sub, k, w)[0])
    cases.append({"note": note, "classes": classes, "weights": weights, "k": k,
                  "replies": [[float(np.float32(v)) for v in r] for r in replies], "answering": answering,
                  "expected": exp})
# Hand cases: the weights decide.
add("plain vote would pick class 0 (1.05 > 0.95); weights 1 and 3 pick class 1 (2.05 > 1.95)", 2, [1.0, 3.0],
    [[0.6, 0.4], [0.45, 0.55]], [0, 1], None)
add("same replies, weights equal: class 0", 2, [0.5, 0.5], [[0.6, 0.4], [0.45, 0.55]], [0, 1], None)
add("a small weight silences a confident member", 3, [0.05, 1.0, 1.0],
    [[0.98, 0.01, 0.01], [0.3, 0.5, 0.2], [0.3, 0.45, 0.25]], [0, 1, 2], None)
add("same, only members 0 and 2 answer: 0.349 vs 0.4505 -> class 1", 3,
    [0.05, 1.0, 1.0], [[0.98, 0.01, 0.01], [0.3, 0.5, 0.2], [0.3, 0.45, 0.25]], [0, 2], None)
add("top-1 replies with weights: member 1 (w 0.7) outvotes member 0 (w 0.4)", 4, [0.4, 0.7, 0.2],
    [[0.9, 0.05, 0.03, 0.02], [0.1, 0.6, 0.2, 0.1], [0.2, 0.3, 0.4, 0.1]], [0, 1], 1)
add("exact tie 0.125 + 0.375 = 0.375 + 0.125: the lower class index wins", 2, [0.5, 0.5],
    [[0.25, 0.75], [0.75, 0.25]], [0, 1], None)
add("float64 in family order: 0.1 + 0.2 = 0.30000000000000004 > 0.3, so class 1 (a tie in exact arithmetic)",
    2, [0.1, 0.2, 0.3], [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], [0, 1, 2], None)
add("top-k cut with equal probabilities keeps the lower class", 4, [1.0, 0.9],
    [[0.3, 0.3, 0.3, 0.1], [0.1, 0.2, 0.35, 0.35]], [0, 1], 2)
rng = np.random.default_rng(15)
for i in range(40):
    classes = int(rng.choice([3, 4, 10]))
    n = int(rng.integers(1, 6))
    weights = [round(float(v), 4) for v in rng.uniform(0.05, 1.0, n)]
    replies = [rng.dirichlet(np.ones(classes) * 0.7).astype(np.float32).tolist() for _ in range(n)]
    answering = sorted(rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False).tolist())
    k = None if rng.random() < 0.4 else int(rng.integers(1, classes // 2 + 1))
    add(f"random {i}", classes, weights, replies, answering, k)
doc = {"about": "Shared test vector of the weighted soft vote (docs/models.md, the combine rule): score[c] = sum "
       "over the answering variants, in family order, of weight * probability (float64; a top-k reply lists only "
       "its k largest probabilities, ties to the lower class); answer = argmax, lowest class on ties. k null: full "
       "reply. Checked by models/vptrain/tests/test_combine.py and crates/vp-core/tests/shared_vote_vector.rs. "
       "Regenerate: models/vptrain/tests/make_vote_vector.py", "cases": cases}
open(Path(__file__).resolve().parents[3] / "crates/vp-core/testdata/weighted-vote.json", "w").write(json.dumps(doc, indent=1) + "\n")
print(len(cases), [c["expected"] for c in cases[:8]])
