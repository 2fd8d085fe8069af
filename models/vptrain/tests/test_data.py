"""Data sets: Fashion-MNIST idx files, digits mapping, the validation split, malformed files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from vptrain import data


def test_fashion_mnist_official_split() -> None:
    ds = data.load_fashion_mnist()
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64
    assert sorted(np.unique(ds.test_y).tolist()) == list(range(10))
    assert len(ds.classes) == 10 and ds.shape == (1, 28, 28)
    assert 0.25 < ds.mean < 0.32 and 0.3 < ds.std < 0.4


def test_digits_are_mapped_to_uint8_and_split_stably() -> None:
    a, b = data.load_digits(), data.load_digits()
    assert a.train_x.dtype == np.uint8 and a.shape == (1, 8, 8)
    assert a.train_x.max() == 255 and a.train_x.min() == 0
    assert len(a.train_x) + len(a.test_x) == 1797 and len(a.test_x) == 360
    np.testing.assert_array_equal(a.test_y, b.test_y)


def test_validation_split_is_disjoint_and_deterministic() -> None:
    tr, va = data.split_validation(1000, 0.1, seed=3)
    tr2, va2 = data.split_validation(1000, 0.1, seed=3)
    assert len(va) == 100 and len(tr) == 900 and not set(tr) & set(va)
    np.testing.assert_array_equal(va, va2)
    np.testing.assert_array_equal(tr, tr2)
    with pytest.raises(data.DataError):
        data.split_validation(10, 1.0, 0)


def test_unknown_dataset_is_a_clear_error() -> None:
    with pytest.raises(data.DataError, match="unknown data set 'imagenet'"):
        data.load("imagenet")


def _write_idx(path: Path, payload: bytes) -> None:
    with gzip.open(path, "wb") as f:
        f.write(payload)


def test_malformed_idx_files_are_rejected(tmp_path: Path) -> None:
    bad_magic = tmp_path / "a.gz"
    _write_idx(bad_magic, struct.pack(">HBB", 0, 0x0D, 1) + struct.pack(">I", 1) + b"\0\0\0\0")
    with pytest.raises(data.DataError, match="unsigned bytes"):
        data._read_idx(bad_magic)
    short = tmp_path / "b.gz"
    _write_idx(short, struct.pack(">HBB", 0, 0x08, 2) + struct.pack(">II", 2, 3) + b"\1\2")
    with pytest.raises(data.DataError, match="expected 6"):
        data._read_idx(short)
    with pytest.raises(data.DataError, match="not found"):
        data._read_idx(tmp_path / "missing.gz")
