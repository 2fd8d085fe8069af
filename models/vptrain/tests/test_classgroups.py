"""Class parallelism: class groups, relabelling, the combine rule (most confident non-"other" class) and its
batch form, the exported sub-model contract, and the shipped sub-models' accuracy re-measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vptrain import classgroups as cg
from vptrain import combine, data, export, manifest
from vptrain.arch import ArchSpec, Classifier

SHIPPED = Path(__file__).resolve().parents[2] / "fmnist-cp"


def test_groups_split_evenly_in_order() -> None:
    assert cg.groups(10, 4) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert cg.groups(10, 2) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert cg.groups(3, 3) == [[0], [1], [2]]
    for bad in (0, 11):
        with pytest.raises(ValueError):
            cg.groups(10, bad)


def test_relabel_maps_outside_classes_to_other() -> None:
    assert cg.relabel(np.array([0, 3, 4, 5, 9]), [3, 4, 5]).tolist() == [3, 0, 1, 2, 3]


def test_scatter_places_group_columns_and_drops_other() -> None:
    out = cg.scatter(np.array([[0.1, 0.2, 0.7]], np.float32), [6, 7], 10)
    assert out.shape == (1, 10) and out[0, 6] == np.float32(0.1) and out[0, 7] == np.float32(0.2)
    assert out.sum() == pytest.approx(0.3)
    with pytest.raises(ValueError):
        cg.scatter(np.zeros((1, 2), np.float32), [6, 7], 10)


def test_combine_takes_the_most_confident_reply() -> None:
    assert cg.combine([]) is None
    assert cg.combine([(2, 0.3), (7, 0.9), (4, 0.5)]) == 7
    assert cg.combine([(7, 0.5), (2, 0.5)]) == 2  # tie: lower class
    assert cg.combine([(9, 0.01)]) == 9  # a lone low-confidence reply still answers


def test_batch_rule_equals_the_single_rule_and_the_aggregators_top1_soft_vote() -> None:
    rng = np.random.default_rng(0)
    gs = cg.groups(10, 4)
    outs = []
    for g in gs:
        p = rng.dirichlet(np.ones(len(g) + 1), size=300).astype(np.float32)
        outs.append(cg.scatter(p, g, 10))
    pred = cg.combine_batch(outs)
    for i in range(300):
        replies = [(int(o[i].argmax()), float(o[i].max())) for o in outs]
        assert pred[i] == cg.combine(replies)
    assert (pred == combine.vote(outs, k=1)).all()


def test_exported_sub_model_follows_the_contract(tmp_path) -> None:
    torch.manual_seed(0)
    spec = ArchSpec(name="g1", width=0.35, resolution=16, depth=(1, 1, 1, 1, 1, 1, 1), head_channels=64,
                    stem_stride=2, strides=(1, 2, 2, 2, 1, 2, 1))
    model = Classifier(spec, 1, 28, 4, 0.286, 0.353).eval()
    path = tmp_path / "g1.onnx"
    cg._export(model, [3, 4, 5], 10, path, (1, 28, 28))
    x = np.random.default_rng(1).integers(0, 256, (5, 1, 28, 28), dtype=np.uint8)
    got = export.ort_probs(export.session(path), x)
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
    assert got.shape == (5, 10)
    np.testing.assert_allclose(got[:, [3, 4, 5]], want[:, :3], atol=1e-6)
    assert (got[:, [0, 1, 2, 6, 7, 8, 9]] == 0).all()
    np.testing.assert_allclose(1 - got.sum(1), want[:, 3], atol=1e-6)


def test_shipped_sub_models_reproduce_their_accuracy() -> None:
    meta = yaml.safe_load((SHIPPED / "classgroups.yaml").read_text())
    ds = data.load("fashion-mnist")
    outs = []
    for m, g in zip(meta["models"], cg.groups(10, len(meta["models"])), strict=True):
        assert m["classes"] == g
        path = SHIPPED / m["file"]
        assert manifest.sha256(path) == m["sha256"]
        outs.append(export.ort_probs(export.session(path), ds.test_x))
    for row in meta["subsets"]:
        idx = [[m["name"] for m in meta["models"]].index(n) for n in row["groups"]]
        acc = combine.accuracy(cg.combine_batch([outs[i] for i in idx]), ds.test_y)
        assert acc == pytest.approx(row["accuracy"], abs=1e-6)
    # The manifest the servers get is a valid schema-v1 manifest.
    fam = manifest.read(SHIPPED.parent / "fmnist" / "ensemble.yaml")
    man = cg.ensemble_manifest(meta, fam["baseline"], fam["input"])
    assert len(man["subsets"]) == 2 ** len(meta["models"]) - 1
    assert manifest.validate(man) == []
