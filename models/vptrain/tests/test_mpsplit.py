"""Model-parallel splitter: the stages compose to the original graph (same outputs on real test images), the MACs
are balanced and conserved, every hop is one tensor, and impossible plans are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from vptrain import data, export, mpsplit

BASELINE = Path(__file__).resolve().parents[2] / "fmnist" / "baseline.onnx"


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return data.load("fashion-mnist").test_x[:200]


@pytest.fixture(scope="module")
def reference(images) -> np.ndarray:
    return export.ort_probs(export.session(BASELINE), images)


def run_chain(folder: Path, meta: dict, images: np.ndarray) -> np.ndarray:
    feed = {meta["stages"][0]["inputs"][0]: images}
    for stage in meta["stages"]:
        sess = export.session(folder / stage["file"])
        outs = sess.run(stage["outputs"], feed)
        feed = dict(zip(stage["outputs"], outs, strict=True))
    return feed["probs"]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_stages_compose_to_the_original(tmp_path, images, reference, n) -> None:
    meta = mpsplit.split(BASELINE, n, tmp_path)
    assert len(meta["stages"]) == n
    got = run_chain(tmp_path, meta, images)
    assert got.shape == reference.shape
    assert float(np.abs(got - reference).max()) <= 1e-5
    for a, b in zip(meta["stages"], meta["stages"][1:]):
        assert len(a["outputs"]) == 1 and a["outputs"] == b["inputs"]  # one tensor per hop
        assert onnx.load(str(tmp_path / b["file"])).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_macs_are_conserved_and_balanced(tmp_path) -> None:
    meta = mpsplit.split(BASELINE, 4, tmp_path)
    macs = [s["macs"] for s in meta["stages"]]
    assert sum(macs) == meta["total_macs"] == sum(mpsplit.node_macs(onnx.load(str(BASELINE))))
    assert max(macs) <= 1.5 * meta["total_macs"] / 4  # within 50 % of an even share


def test_total_macs_match_the_manifest(fmnist_dir) -> None:
    import yaml
    man = yaml.safe_load((fmnist_dir / "ensemble.yaml").read_text())
    assert sum(mpsplit.node_macs(onnx.load(str(BASELINE)))) == man["baseline"]["macs"]


def test_impossible_plans_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError):
        mpsplit.plan(onnx.load(str(BASELINE)), 0)
    with pytest.raises(ValueError, match="too few single-tensor cuts"):
        mpsplit.plan(onnx.load(str(BASELINE)), 500)
    assert mpsplit.main(["no-such.onnx", "2", str(tmp_path)]) == 1
    assert mpsplit.main(["x"]) == 2
