"""The work every peer server of benches/peers.sh does: one ONNX model in one ONNX Runtime session (1 intra-op
thread, as vp-variant runs by default), answering what vp-variant answers: the top-k classes (INT64 [N,k]) and their
probabilities (FP32 [N,k]). Shared by kserve_onnx.py, mlserver_onnx.py and triton_onnx.py so the peers differ only
in the server around it."""

import numpy as np
import onnxruntime as ort


class OnnxTopK:
    """`topk(x)` -> (classes, probs) for a UINT8 batch `x` [N,C,H,W]."""

    def __init__(self, path: str, k: int = 3):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.k = k

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs = self.session.run(None, {self.input: x})[0]
        classes = np.argsort(-probs, axis=1, kind="stable")[:, : self.k]
        return classes.astype(np.int64), np.take_along_axis(probs, classes, axis=1).astype(np.float32)
