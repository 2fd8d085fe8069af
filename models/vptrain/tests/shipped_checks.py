"""Checks shared by the tests of the shipped families (test_shipped_mnist.py, test_shipped_cifar10.py): the tables
recomputed from the ONNX files, and the targets block recomputed from the tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vptrain import combine, export, targets


def variant_probs(folder: Path, shipped: dict, x: np.ndarray) -> list[np.ndarray]:
    """ONNX Runtime probabilities of every variant of the family in `folder`, in family order."""
    return [export.ort_probs(export.session(folder / v["file"]), x) for v in shipped["variants"]]


def assert_tables_recomputed(folder: Path, shipped: dict, probs: list[np.ndarray], x: np.ndarray,
                             y: np.ndarray) -> None:
    """The subset table (with the manifest's vote weights) and the baseline's accuracy equal the manifest's."""
    names = [v["name"] for v in shipped["variants"]]
    weights = [v.get("vote_weight", 1.0) for v in shipped["variants"]]
    assert combine.subset_table(names, probs, y, weights) == shipped["subsets"]
    base = export.ort_probs(export.session(folder / shipped["baseline"]["file"]), x)
    assert round(combine.accuracy(base.argmax(1), y), 6) == shipped["baseline"]["accuracy"]


def assert_targets_recomputed(shipped: dict) -> None:
    """Every claimed target is met, and both target blocks equal what the tables give."""
    claimed = shipped["training"]["config"]["targets"]
    assert targets.evaluate(claimed, shipped) == shipped["targets"]
    assert [n for n, t in shipped["targets"].items() if not t["met"]] == []
    open_targets = shipped["training"]["config"].get("open_targets") or {}
    assert targets.evaluate(open_targets, shipped) == shipped.get("open_targets", {})
