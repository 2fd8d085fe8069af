"""Smoke run of the whole pipeline on scikit-learn digits: train briefly -> export -> evaluate -> manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vptrain import cli, combine, data, export, manifest


@pytest.fixture(scope="module")
def built(configs_dir: Path, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("digits")
    out, work = root / "out", root / "work"
    assert cli.main(["build", str(configs_dir / "digits-tiny.yaml"), "--out", str(out), "--work", str(work)]) == 0
    return out, manifest.read(out / "ensemble.yaml")


def test_manifest_is_valid_and_complete(built) -> None:
    out, man = built
    assert manifest.validate(man, out) == []
    assert cli.main(["validate", str(out / "ensemble.yaml")]) == 0
    assert man["dataset"]["name"] == "digits" and man["input"]["shape"] == [1, 8, 8]
    assert len(man["subsets"]) == 7 and [r["k"] for r in man["topk"]] == [1, 2, 3, 4, 5]
    assert (out / "family.yaml").exists()
    assert man["training"]["wall_time_s"] > 0 and "hardware" in man["training"]
    assert man["plots"] == ["curves.png", "degradation.png"]
    for p in man["plots"]:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [h["epoch"] for h in man["training"]["variants_run"]["history"]] == [1.0, 2.0, 3.0]
    assert all("ensemble" in h for h in man["training"]["variants_run"]["history"])
    assert set(man["targets"]) == {"param_ratio", "mac_ratio"}


def test_baseline_is_reused_only_with_the_same_recipe(built, configs_dir: Path, tmp_path: Path) -> None:
    out, man = built
    work = out.parent / "work"
    again = tmp_path / "again"
    assert cli.main(["build", str(configs_dir / "digits-tiny.yaml"), "--out", str(again), "--work", str(work),
                     "--baseline-from", str(out / "ensemble.yaml")]) == 0
    man2 = manifest.read(again / "ensemble.yaml")
    assert man2["baseline"]["sha256"] == man["baseline"]["sha256"]
    assert man2["training"]["baseline_run"] == man["training"]["baseline_run"]
    assert man2["training"]["baseline_reused"]["sha256"] == man["baseline"]["sha256"]
    other = tmp_path / "other.yaml"
    other.write_text((configs_dir / "digits-tiny.yaml").read_text().replace("lr: 0.05", "lr: 0.04"))
    with pytest.raises(Exception, match="different recipe"):
        cli.main(["build", str(other), "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w"),
                  "--baseline-from", str(out / "ensemble.yaml")])


def test_models_learned_something(built) -> None:
    _, man = built
    # 3 short epochs on 1.3k images: far from converged, but clearly above chance (0.1).
    assert man["subsets"][-1]["accuracy"] > 0.3


def test_manifest_numbers_are_reproducible_from_the_onnx_files(built) -> None:
    out, man = built
    ds = data.load_digits()
    probs = [export.ort_probs(export.session(out / v["file"]), ds.test_x) for v in man["variants"]]
    for v, p in zip(man["variants"], probs, strict=True):
        assert combine.accuracy(p.argmax(1), ds.test_y) == pytest.approx(v["accuracy"], abs=1e-6)
    names = [v["name"] for v in man["variants"]]
    weights = [v["vote_weight"] for v in man["variants"]]
    assert man["vote"]["rule"] == "weighted soft vote" and all(0 < w <= 1 for w in weights) and max(weights) == 1
    assert combine.subset_table(names, probs, ds.test_y, weights) == man["subsets"]
    for row in man["topk"]:
        got = combine.accuracy(combine.vote(probs, row["k"], weights), ds.test_y)
        assert got == pytest.approx(row["accuracy"], abs=1e-6)
    for v in [*man["variants"], man["baseline"]]:
        assert max(v["ort_max_abs_diff"].values()) < 1e-5


def test_rebuild_resumes_instead_of_retraining(built, configs_dir: Path, tmp_path: Path) -> None:
    out, man = built
    work = out.parent / "work"
    again = tmp_path / "again"
    assert cli.main(["build", str(configs_dir / "digits-tiny.yaml"), "--out", str(again), "--work", str(work)]) == 0
    man2 = manifest.read(again / "ensemble.yaml")
    assert [v["sha256"] for v in man2["variants"]] == [v["sha256"] for v in man["variants"]]
    assert man2["subsets"] == man["subsets"]


def test_work_dir_of_another_config_is_refused(built, tmp_path: Path, configs_dir: Path) -> None:
    out, _ = built
    changed = tmp_path / "changed.yaml"
    changed.write_text((configs_dir / "digits-tiny.yaml").read_text().replace("epochs: 3", "epochs: 4"))
    with pytest.raises(RuntimeError, match="different config"):
        cli.main(["build", str(changed), "--out", str(tmp_path / "o"), "--work", str(out.parent / "work")])


def test_sizes_command_reports_target_failures(tmp_path: Path, configs_dir: Path) -> None:
    assert cli.main(["sizes", str(configs_dir / "fmnist.yaml")]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text((configs_dir / "fmnist.yaml").read_text().replace("width: 0.35, resolution: 16", "width: 1.0, resolution: 28"))
    assert cli.main(["sizes", str(bad)]) == 1


def test_unknown_dataset_in_config_fails_clearly(tmp_path: Path) -> None:
    cfg = tmp_path / "x.yaml"
    cfg.write_text("family: x\ndataset: {name: cifar-1000}\nvariants: [{name: a}]\n")
    with pytest.raises(data.DataError, match="unknown data set"):
        cli.main(["sizes", str(cfg)])


def test_distillation_trains_variants_from_the_trained_baseline(tmp_path: Path, configs_dir: Path) -> None:
    cfg = tmp_path / "kd.yaml"
    text = (configs_dir / "digits-tiny.yaml").read_text()
    cfg.write_text(text.replace("  epochs: 3\n", "  epochs: 1\n  distill_weight: 1.0\n"))
    work = tmp_path / "work"
    with pytest.raises(RuntimeError, match="baseline first"):
        cli.main(["train", str(cfg), "--part", "variants", "--work", str(work)])
    assert cli.main(["train", str(cfg), "--part", "baseline", "--work", str(work)]) == 0
    assert cli.main(["train", str(cfg), "--part", "variants", "--work", str(work)]) == 0
    logits = np.load(work / "teacher_logits.npy")
    assert logits.shape == (len(data.load_digits().train_x), 10)
    for name in ("w25-r8", "w35-r12", "w25-r6"):  # independently trained members: one run each
        assert (work / "variants" / name / "final.pt").exists()


def test_a_variant_with_its_own_recipe_joins_a_reused_family(built, configs_dir: Path, tmp_path: Path) -> None:
    out, man = built
    cfg = tmp_path / "plus.yaml"
    cfg.write_text((configs_dir / "digits-tiny.yaml").read_text().replace(
        "  - {name: w25-r6,",
        "  - {name: w25-r8-i, width: 0.25, resolution: 8, depth: [1, 1, 1, 1, 1, 1, 1], head_channels: 64,\n"
        "     recipe: {distill_weight: 0.0}}\n  - {name: w25-r6,"))
    again, work = tmp_path / "again", tmp_path / "work"
    assert cli.main(["build", str(cfg), "--out", str(again), "--work", str(work),
                     "--baseline-from", str(out / "ensemble.yaml")]) == 0
    man2 = manifest.read(again / "ensemble.yaml")
    assert manifest.validate(man2, again) == []
    names = [v["name"] for v in man2["variants"]]
    assert names == ["w25-r8", "w35-r12", "w25-r8-i", "w25-r6"]  # family order as configured
    old = {v["name"]: v["sha256"] for v in man["variants"]}
    for v in man2["variants"]:  # the group is reused byte for byte, only the new member was trained
        assert (v["sha256"] == old[v["name"]]) if v["name"] in old else v["name"] == "w25-r8-i"
    assert man2["training"]["variants_run"] == man["training"]["variants_run"]
    assert sorted(man2["training"]["own_runs"]) == ["w25-r8-i"]
    assert len(man2["training"]["variants_reused"]["sha256"]) == 3
    assert (work / "variants" / "w25-r8-i" / "final.pt").exists() and not (work / "variants" / "w25-r8").exists()
    assert len(man2["subsets"]) == 15 and all(0 < v["vote_weight"] <= 1 for v in man2["variants"])
    for p in man2["plots"]:
        assert (again / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_own_recipes_may_not_change_the_budget(configs_dir: Path) -> None:
    import yaml

    from vptrain import config

    raw = yaml.safe_load((configs_dir / "digits-tiny.yaml").read_text())
    raw["variants"][1]["recipe"] = {"distill_weight": 0.5}
    cfg = config.parse(raw)
    assert [s.name for s in cfg.group] == ["w25-r8", "w25-r6"] and cfg.own_recipes["w35-r12"].distill_weight == 0.5
    assert cfg.own_recipes["w35-r12"].epochs == cfg.training.epochs
    assert cfg.own_recipes["w35-r12"].member_batches == "independent"
    assert cfg.own_recipes["w35-r12"].ensemble_weight == 0
    for bad, match in (({"epochs": 9}, "may only set"), ({"member_batches": "shared"}, "may only set"),
                       ("fast", "must be a mapping"), ({"stream": 0}, "stream must be"),
                       ({"distill_weight": "x", "bad": 1}, "may only set"), ({"distill_weight": "x"}, "number"),
                       ({"distill_temperature": 0}, "temperature > 0")):
        raw["variants"][1]["recipe"] = bad
        with pytest.raises(config.ConfigError, match=match):
            config.parse(raw)
    for v in raw["variants"]:
        v["recipe"] = {}
    with pytest.raises(config.ConfigError, match="at least one variant"):
        config.parse(raw)


def test_a_new_group_reusing_a_baseline_is_distilled_from_its_onnx_file(built, configs_dir: Path,
                                                                       tmp_path: Path) -> None:
    out, man = built
    cfg = tmp_path / "kd-reuse.yaml"  # the group's recipe changes (distillation), the baseline's does not
    cfg.write_text((configs_dir / "digits-tiny.yaml").read_text().replace(
        "  epochs: 3\n", "  epochs: 3\n  distill_weight: 1.0\n"))
    again, work = tmp_path / "again", tmp_path / "work"
    assert cli.main(["build", str(cfg), "--out", str(again), "--work", str(work),
                     "--baseline-from", str(out / "ensemble.yaml")]) == 0
    ds = data.load_digits()
    probs = export.ort_probs(export.session(out / man["baseline"]["file"]), ds.train_x)
    assert np.array_equal(np.load(work / "teacher_logits.npy"), np.log(np.maximum(probs, np.float32(1e-38))))
    man2 = manifest.read(again / "ensemble.yaml")
    assert man2["baseline"]["sha256"] == man["baseline"]["sha256"] and manifest.validate(man2, again) == []
