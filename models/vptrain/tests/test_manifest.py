"""The shipped family: ensemble.yaml against schema v1, sha256/bytes of its files, the ONNX contract, and the
validator's rejection of broken manifests."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from vptrain import combine, data, export, manifest, targets


@pytest.fixture(scope="module")
def shipped(fmnist_dir: Path) -> dict:
    return manifest.read(fmnist_dir / "ensemble.yaml")


def test_shipped_manifest_is_valid_and_hashes_match(shipped: dict, fmnist_dir: Path) -> None:
    assert manifest.validate(shipped, fmnist_dir) == []


def test_shipped_manifest_describes_fashion_mnist(shipped: dict) -> None:
    assert shipped["dataset"]["name"] == "fashion-mnist"
    assert shipped["dataset"]["classes"] == data.FMNIST_CLASSES
    assert shipped["dataset"]["test_samples"] == 10000
    assert shipped["input"]["shape"] == [1, 28, 28]
    assert 3 <= len(shipped["variants"]) <= 8
    assert len(shipped["subsets"]) == 2 ** len(shipped["variants"]) - 1
    for key in ("config", "wall_time_s", "hardware", "seed"):
        assert key in shipped["training"]


def test_shipped_folder_is_small(fmnist_dir: Path) -> None:
    total = sum(f.stat().st_size for f in fmnist_dir.iterdir() if f.is_file())
    assert total < 20 * 1024 * 1024


def test_shipped_onnx_files_follow_the_contract(shipped: dict, fmnist_dir: Path) -> None:
    x = data.load_fashion_mnist().test_x[:200]
    for entry in [*shipped["variants"], shipped["baseline"]]:
        g = onnx.load(str(fmnist_dir / entry["file"])).graph
        assert [i.name for i in g.input] == ["image"] and [o.name for o in g.output] == ["probs"]
        probs = export.ort_probs(export.session(fmnist_dir / entry["file"]), x)
        assert probs.shape == (200, 10)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_manifest_tables_agree_with_each_other(shipped: dict) -> None:
    full = shipped["subsets"][-1]
    assert full["variants"] == [v["name"] for v in shipped["variants"]]
    assert [r["accuracy"] for r in shipped["topk"]] == full["topk_accuracy"]
    singles = {tuple(r["variants"]): r["accuracy"] for r in shipped["subsets"] if len(r["variants"]) == 1}
    for v in shipped["variants"]:
        assert singles[(v["name"],)] == pytest.approx(v["accuracy"], abs=1e-6)


def test_manifest_subset_rows_are_in_canonical_order(shipped: dict) -> None:
    names = [v["name"] for v in shipped["variants"]]
    expected = [[names[i] for i in s] for s in combine.subsets(names)]
    assert [r["variants"] for r in shipped["subsets"]] == expected


def test_validator_rejects_broken_manifests(shipped: dict, fmnist_dir: Path, tmp_path: Path) -> None:
    def broken(edit) -> list[str]:
        m = copy.deepcopy(shipped)
        edit(m)
        return manifest.validate(m)

    assert broken(lambda m: m.update(schema_version=2))
    assert broken(lambda m: m.pop("subsets"))
    assert broken(lambda m: m["subsets"].pop())
    assert broken(lambda m: m["variants"][0].update(name="Bad_Name"))
    assert broken(lambda m: m["variants"][0].update(accuracy=1.5))
    assert broken(lambda m: m["variants"][0].pop("sha256"))
    assert broken(lambda m: m["topk"].reverse())
    assert broken(lambda m: m["input"].update(dtype="float32"))
    assert broken(lambda m: m["subsets"][-1].update(variants=list(reversed(m["subsets"][-1]["variants"]))))
    # Files: a flipped byte or a missing file is caught.
    copy_dir = tmp_path / "fam"
    shutil.copytree(fmnist_dir, copy_dir)
    first = copy_dir / shipped["variants"][0]["file"]
    raw = bytearray(first.read_bytes())
    raw[-1] ^= 0xFF
    first.write_bytes(bytes(raw))
    assert any("sha256" in e for e in manifest.validate(shipped, copy_dir))
    first.unlink()
    assert any("missing" in e for e in manifest.validate(shipped, copy_dir))


def test_shipped_targets_are_met_and_recomputed_from_the_tables(shipped: dict) -> None:
    """Each shipped family claims every target of its config; the block must equal what its own numbers give."""
    claimed = shipped["training"]["config"]["targets"]
    assert targets.evaluate(claimed, shipped) == shipped["targets"]
    assert len(shipped["targets"]) == len(claimed)
    missed = [name for name, t in shipped["targets"].items() if not t["met"]]
    assert missed == [], f"shipped family misses targets it claims: {missed}"
    # Targets it does not claim (docs/models.md says why) are still measured, from the same tables.
    open_targets = shipped["training"]["config"].get("open_targets") or {}
    assert targets.evaluate(open_targets, shipped) == shipped.get("open_targets", {})


def test_targets_fail_when_the_numbers_do_not_hold(shipped: dict) -> None:
    worse = copy.deepcopy(shipped)
    # Below the baseline and below the best single variant, whatever the shipped numbers are.
    best_single = max(v["accuracy"] for v in worse["variants"])
    worse["subsets"][-1]["accuracy"] = round(min(worse["baseline"]["accuracy"], best_single) - 0.001, 4)
    claims = {**worse["training"]["config"]["targets"], **worse["training"]["config"].get("open_targets", {}),
              "ensemble_at_least_baseline": True, "min_gain_over_best_single_points": 0.5}
    block = targets.evaluate(claims, worse)
    assert block["ensemble_vs_baseline"]["met"] is False
    assert block["gain_over_best_single_points"]["met"] is False
    with pytest.raises(targets.TargetError):
        targets.evaluate({"min_speedup": 2}, shipped)


def test_shipped_vote_weights_reproduce_the_tables(shipped: dict, fmnist_dir: Path) -> None:
    ds = data.load_fashion_mnist()
    probs = [export.ort_probs(export.session(fmnist_dir / v["file"]), ds.test_x) for v in shipped["variants"]]
    names = [v["name"] for v in shipped["variants"]]
    weights = [v.get("vote_weight", 1.0) for v in shipped["variants"]]
    assert combine.subset_table(names, probs, ds.test_y, weights) == shipped["subsets"]


def test_shipped_plots_exist(shipped: dict, fmnist_dir: Path) -> None:
    assert shipped["plots"] == ["curves.png", "degradation.png"]
    for p in shipped["plots"]:
        assert (fmnist_dir / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
