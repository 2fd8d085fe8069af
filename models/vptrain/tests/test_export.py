"""Exporter: the ONNX contract (names, dtypes, dynamic batch) and ONNX Runtime vs PyTorch parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vptrain import data, export
from vptrain.arch import ArchSpec, Classifier, Exported


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Classifier, Path]:
    torch.manual_seed(0)
    model = Classifier(ArchSpec(name="v", width=0.35, resolution=20, depth=(1, 1, 2, 2, 1, 1, 1),
                                head_channels=128, stem_stride=2, strides=(1, 2, 2, 2, 1, 2, 1)),
                       1, 28, 10, 0.286, 0.353)
    # Make BN statistics non-trivial so parity is tested on a realistic graph.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8))
    model.eval()
    path = tmp_path_factory.mktemp("onnx") / "v.onnx"
    export.export(model, path, (1, 28, 28))
    return model, path


def test_graph_follows_the_contract(exported) -> None:
    _, path = exported
    g = onnx.load(str(path)).graph
    assert [i.name for i in g.input] == ["image"]
    assert [o.name for o in g.output] == ["probs"]
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert g.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = g.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]


@pytest.mark.parametrize("n", [1, 7, 64])
def test_dynamic_batch_and_probabilities(exported, n: int) -> None:
    _, path = exported
    x = np.random.default_rng(n).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    probs = export.ort_probs(export.session(path), x)
    assert probs.shape == (n, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_parity_on_random_and_real_inputs(exported) -> None:
    model, path = exported
    rand = np.random.default_rng(1).integers(0, 256, (32, 1, 28, 28), dtype=np.uint8)
    real = data.load_fashion_mnist().test_x[:128]
    assert export.parity(model, path, rand) < 1e-5
    assert export.parity(model, path, real) < 1e-5


def test_wrong_input_is_refused_by_the_graph(exported) -> None:
    _, path = exported
    sess = export.session(path)
    with pytest.raises(Exception, match="(?i)type|dtype"):
        sess.run(["probs"], {"image": np.zeros((1, 1, 28, 28), np.float32)})
    with pytest.raises(Exception, match="(?i)dim|shape"):
        sess.run(["probs"], {"image": np.zeros((1, 1, 27, 28), np.uint8)})


def test_exported_wrapper_matches_classifier_softmax(exported) -> None:
    model, _ = exported
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(Exported(model)(x), torch.softmax(model(x), 1))
