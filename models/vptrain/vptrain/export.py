"""ONNX export of one model (uint8 `image` in, softmax `probs` out) and its ONNX Runtime vs PyTorch parity check."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from .arch import Classifier, Exported

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "probs"


def export(model: Classifier, path: Path, shape: tuple[int, int, int]) -> None:
    """Writes `model` as ONNX with the family contract (dynamic batch) using the TorchScript exporter."""
    wrapper = Exported(model).cpu().eval()
    example = torch.zeros((2, *shape), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}}, do_constant_folding=True)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    proto.doc_string = f"variant-parallel model {model.spec.name}: uint8 image [N,C,H,W] -> softmax probs [N,classes]"
    onnx.save(proto, str(path))


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU ONNX Runtime session."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_probs(sess: ort.InferenceSession, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """Runs the exported graph over uint8 images in batches."""
    out = [sess.run([OUTPUT_NAME], {INPUT_NAME: images[i:i + batch]})[0] for i in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.float32)


@torch.no_grad()
def parity(model: Classifier, path: Path, images: np.ndarray) -> float:
    """Max abs difference between ONNX Runtime and PyTorch probabilities on the given uint8 images."""
    wrapper = Exported(model).cpu().eval()
    expected = wrapper(torch.from_numpy(images)).numpy()
    got = ort_probs(session(path), images)
    return float(np.abs(expected - got).max())
