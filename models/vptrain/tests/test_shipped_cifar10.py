"""The shipped CIFAR-10 family (models/cifar10, data set `cifar10-npm`, 3x32x32 colour input): valid manifest and
hashes, every table recomputed from the ONNX files on CIFAR-10's test batch with the manifest's vote weights, the
IDX copy that `vpctl verify` reads equal to the importer's test split, and the targets it claims met."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipped_checks import assert_tables_recomputed, assert_targets_recomputed, variant_probs
from vptrain import combine, data, manifest, npm_cifar10

CIFAR10 = Path(__file__).resolve().parents[2] / "cifar10"


@pytest.fixture(scope="module")
def shipped() -> dict:
    return manifest.read(CIFAR10 / "ensemble.yaml")


@pytest.fixture(scope="module")
def test_split() -> tuple[np.ndarray, np.ndarray]:
    folder = npm_cifar10.default_dir()
    assert folder.is_dir(), f"{folder} missing: run scripts/setup-cifar10-npm.sh (scripts/setup.sh runs it)"
    _, _, x, y = npm_cifar10.read(train=False)
    return x, y


def test_manifest_is_valid_and_describes_cifar10(shipped: dict) -> None:
    assert manifest.validate(shipped, CIFAR10) == []
    assert shipped["dataset"]["name"] == "cifar10-npm" and shipped["input"]["shape"] == [3, 32, 32]
    assert shipped["input"]["color"] == "rgb" and shipped["dataset"]["classes"] == npm_cifar10.CLASSES
    assert shipped["dataset"]["test_samples"] == 10_000 and "test_split" not in shipped["dataset"]
    assert sum(f.stat().st_size for f in CIFAR10.rglob("*") if f.is_file()) < 20 * 1024 * 1024


def test_vpctls_copy_of_the_test_split_is_the_importers(test_split) -> None:
    folder = npm_cifar10.default_dir().parent / "testset"
    x = data._read_idx(folder / "t10k-images-idx4-ubyte.gz")
    y = data._read_idx(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    assert np.array_equal(x, test_split[0]) and np.array_equal(y, test_split[1])


def test_tables_are_recomputed_from_the_onnx_files(shipped: dict, test_split) -> None:
    x, y = test_split
    probs = variant_probs(CIFAR10, shipped, x)
    assert_tables_recomputed(CIFAR10, shipped, probs, x, y)
    for v, p in zip(shipped["variants"], probs, strict=True):
        assert round(combine.accuracy(p.argmax(1), y), 6) == v["accuracy"]


def test_claimed_targets_are_met_and_open_ones_measured(shipped: dict) -> None:
    assert_targets_recomputed(shipped)

