"""Your own images: the image-folder loader (gray and RGB, odd sizes, a class with one image, clear errors for an
empty folder or a corrupt file), RGB export parity ONNX Runtime vs PyTorch, and a tiny RGB family end to end."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vptrain import cli, combine, data, export, manifest
from vptrain.arch import ArchSpec, Classifier


def _write(path: Path, size: tuple[int, int], mode: str, value: int | tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    for i in range(5):  # red-ish colour images of odd sizes, PNG and JPEG
        _write(root / "cat" / f"c{i}.png", (37 + i, 23), "RGB", (200, 30 + i, 40))
        _write(root / "dog" / f"d{i}.JPG", (50, 61 + i), "RGB", (20, 40, 210))
    _write(root / "dog" / "gray.png", (9, 9), "L", 128)  # a grayscale file in a colour data set
    _write(root / "fish" / "only.jpeg", (64, 64), "RGB", (10, 220, 10))  # a class with one image
    (root / "dog" / "notes.txt").write_text("not an image: skipped")
    return root


def test_rgb_folder_loads_with_classes_sorted_and_sizes_unified(folder: Path) -> None:
    ds = data.load("image-folder", {"path": str(folder), "resolution": 16, "channels": 3}, folder.parent)
    assert ds.classes == ["cat", "dog", "fish"]
    assert ds.shape == (3, 16, 16) and ds.train_x.dtype == np.uint8
    assert len(ds.train_x) + len(ds.test_x) == 12
    assert (ds.test_y == 2).sum() == 0 and (ds.train_y == 2).sum() == 1  # one image: training only
    assert (ds.test_y == 0).sum() == 1 and (ds.test_y == 1).sum() == 1
    cat = ds.train_x[ds.train_y == 0][0]
    assert cat[0].mean() > 190 and cat[2].mean() < 50  # channel order R, G, B (planar CHW)


def test_gray_conversion_and_relative_path(folder: Path) -> None:
    ds = data.load("image-folder", {"path": "pets", "resolution": 12, "channels": 1}, folder.parent)
    assert ds.shape == (1, 12, 12)
    fish = ds.train_x[ds.train_y == 2][0]
    assert abs(int(fish.mean()) - round(0.299 * 10 + 0.587 * 220 + 0.114 * 10)) <= 1


def test_train_and_test_subfolders_are_the_splits(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 2)):
        for c in ("a", "b"):
            for i in range(n):
                _write(tmp_path / "ds" / split / c / f"{i}.png", (5, 7), "L", 10 * i)
    ds = data.load("image-folder", {"path": "ds", "resolution": 8, "channels": 1}, tmp_path)
    assert (len(ds.train_x), len(ds.test_x)) == (6, 4)


@pytest.mark.parametrize("setup, message", [
    (lambda r: r.mkdir(), "no class sub-folders"),
    (lambda r: [(r / c).mkdir(parents=True) for c in "ab"], "holds no PNG or JPEG files"),
    (lambda r: _write(r / "a" / "x.png", (3, 3), "L", 0), "at least 2 class folders"),
    (lambda r: None, "does not exist"),
])
def test_empty_or_missing_folders_give_clear_errors(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "imgs"
    setup(root)
    with pytest.raises(data.DataError, match=message):
        data.load("image-folder", {"path": str(root)}, tmp_path)


def test_corrupt_file_is_named(folder: Path) -> None:
    bad = folder / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(data.DataError, match="cannot decode image .*broken.png"):
        data.load("image-folder", {"path": str(folder)}, folder.parent)


def test_bad_settings_are_refused(folder: Path) -> None:
    for spec, msg in (({"channels": 2}, "channels must be 1 or 3"), ({"resolution": 2}, "resolution"),
                      ({"test_fraction": 1.5}, "test_fraction")):
        with pytest.raises(data.DataError, match=msg):
            data.load("image-folder", {"path": str(folder), **spec}, folder.parent)


def test_rgb_export_parity_onnx_vs_pytorch(tmp_path: Path) -> None:
    spec = ArchSpec("rgb", width=0.25, resolution=20, depth=(1, 1, 1, 1, 1, 1, 1), head_channels=64,
                    stem_stride=2, strides=(1, 2, 2, 2, 1, 2, 1))
    model = Classifier(spec, 3, 32, 5, 0.45, 0.25).eval()
    path = tmp_path / "rgb.onnx"
    export.export(model, path, (3, 32, 32))
    sess = export.session(path)
    assert sess.get_inputs()[0].shape[1:] == [3, 32, 32] and sess.get_inputs()[0].type == "tensor(uint8)"
    imgs = np.random.default_rng(0).integers(0, 256, size=(16, 3, 32, 32), dtype=np.uint8)
    assert export.parity(model, path, imgs) < 1e-5


def test_tiny_rgb_family_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "colours"
    rng = np.random.default_rng(0)
    for c, rgb in enumerate([(220, 20, 20), (20, 220, 20), (20, 20, 220)]):
        for i in range(12):
            noisy = np.clip(np.array(rgb) + rng.integers(-30, 30, size=(19, 21, 3)), 0, 255).astype(np.uint8)
            _write(root / f"c{c}" / f"{i}.png", (1, 1), "RGB", 0)
            Image.fromarray(noisy, "RGB").save(root / f"c{c}" / f"{i}.png")
    cfg = tmp_path / "colours.yaml"
    cfg.write_text("""family: colours
dataset: {name: image-folder, path: colours, resolution: 12, channels: 3, test_fraction: 0.25}
architecture: {stem_stride: 1, strides: [1, 1, 2, 1, 1, 2, 1]}
baseline: {name: baseline, width: 0.5, head_channels: 64}
variants:
  - {name: a, width: 0.25, resolution: 12, depth: [1, 1, 1, 1, 1, 1, 1], head_channels: 32}
  - {name: b, width: 0.25, resolution: 8, depth: [1, 1, 1, 1, 1, 1, 1], head_channels: 32}
training: {epochs: 4, batch_size: 8, lr: 0.05, flip: false, shift: 1, val_fraction: 0.2, ensemble_weight: 0.0,
           member_batches: independent, eval_batch: 64}
vote: {weights: fitted}
""")
    out = tmp_path / "out"
    assert cli.main(["build", str(cfg), "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    man = manifest.read(out / "ensemble.yaml")
    assert manifest.validate(man, out) == []
    assert man["input"]["shape"] == [3, 12, 12] and man["input"]["color"] == "rgb"
    assert man["dataset"]["classes"] == ["c0", "c1", "c2"] and man["dataset"]["test_samples"] == 9
    ds = data.load("image-folder", {"path": "colours", "resolution": 12, "channels": 3, "test_fraction": 0.25},
                   tmp_path)
    probs = [export.ort_probs(export.session(out / v["file"]), ds.test_x) for v in man["variants"]]
    weights = [v["vote_weight"] for v in man["variants"]]
    assert combine.subset_table(["a", "b"], probs, ds.test_y, weights) == man["subsets"]
    assert man["dataset"]["test_split"] == "testset"
    assert sorted(p.name for p in (out / "testset").iterdir()) == ["t10k-images-idx4-ubyte.gz",
                                                                  "t10k-labels-idx1-ubyte.gz"]
    raw = gzip.decompress((out / "testset" / "t10k-images-idx4-ubyte.gz").read_bytes())
    assert raw[:4] == b"\x00\x00\x08\x04" and struct.unpack(">4I", raw[4:20]) == (9, 3, 12, 12)
    np.testing.assert_array_equal(np.frombuffer(raw[20:], np.uint8).reshape(9, 3, 12, 12), ds.test_x)
