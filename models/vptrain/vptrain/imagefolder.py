"""Your own images as a data set: one sub-folder per class (torchvision's ImageFolder layout), PNG or JPEG files of
any size, grayscale or colour, read into uint8 [N, C, H, W] at the config's resolution and channel count.

Config (`dataset:` of a family config):

    dataset:
      name: image-folder
      path: my-images          # relative to the config file's folder, or absolute
      resolution: 32           # every image is resized to resolution x resolution (bilinear)
      channels: 3              # 3: RGB, 1: grayscale (colour images converted with ITU-R 601-2 luma)
      test_fraction: 0.2       # share of each class held out as the test split (deterministic)
      seed: 0

If the folder has `train/` and `test/` sub-folders (each one sub-folder per class), those are the splits instead.
Classes are the sub-folder names in sorted order; files with other extensions are skipped; a file that cannot be
decoded, an empty class folder or a folder without images is a DataError naming the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

EXTENSIONS = (".png", ".jpg", ".jpeg")


class ImageFolderError(RuntimeError):
    """The folder or one of its files cannot be used (subclassed by data.DataError's users as a DataError)."""


def _classes(root: Path) -> list[str]:
    if not root.is_dir():
        raise ImageFolderError(f"image folder {root} does not exist or is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ImageFolderError(f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>.png)")
    return classes


def _files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise ImageFolderError(f"class folder {folder} holds no PNG or JPEG files")
    return files


def read_image(path: Path, resolution: int, channels: int) -> np.ndarray:
    """One file as uint8 [C, resolution, resolution]."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            if img.size != (resolution, resolution):
                img = img.resize((resolution, resolution), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageFolderError(f"cannot decode image {path}: {e}") from e
    return arr[None, :, :] if channels == 1 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def _read_split(root: Path, classes: list[str], resolution: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for label, name in enumerate(classes):
        for f in _files(root / name):
            xs.append(read_image(f, resolution, channels))
            ys.append(label)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def load(spec: dict[str, Any], base: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(classes, train_x, train_y, test_x, test_y) of an image-folder data set config."""
    if "path" not in spec:
        raise ImageFolderError("dataset.path is required for an image-folder data set")
    root = Path(spec["path"])
    root = root if root.is_absolute() else (base / root)
    resolution = int(spec.get("resolution", 32))
    channels = int(spec.get("channels", 3))
    if channels not in (1, 3):
        raise ImageFolderError(f"dataset.channels must be 1 or 3, got {channels}")
    if not 4 <= resolution <= 512:
        raise ImageFolderError(f"dataset.resolution must be between 4 and 512, got {resolution}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = _classes(root / "train")
        if _classes(root / "test") != classes:
            raise ImageFolderError(f"{root}/train and {root}/test must have the same class folders")
        tx, ty = _read_split(root / "train", classes, resolution, channels)
        vx, vy = _read_split(root / "test", classes, resolution, channels)
        return classes, tx, ty, vx, vy
    classes = _classes(root)
    if len(classes) < 2:
        raise ImageFolderError(f"image folder {root} needs at least 2 class folders, found {classes}")
    x, y = _read_split(root, classes, resolution, channels)
    fraction = float(spec.get("test_fraction", 0.2))
    if not 0.0 < fraction < 1.0:
        raise ImageFolderError(f"dataset.test_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    test = np.zeros(len(y), dtype=bool)
    for c in range(len(classes)):  # per class, so every class with >= 2 images is in both splits
        idx = np.flatnonzero(y == c)
        n_test = int(len(idx) * fraction) if len(idx) > 1 else 0
        n_test = max(n_test, 1) if len(idx) > 1 else 0
        test[rng.permutation(idx)[:n_test]] = True
    return classes, x[~test], y[~test], x[test], y[test]
