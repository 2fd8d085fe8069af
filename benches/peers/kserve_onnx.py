"""KServe's Python model server (the `kserve` package's ModelServer) serving one ONNX model of a family with ONNX
Runtime, answering what `vp-variant` answers: the top-k classes and their probabilities (outputs `classes`, INT64
[N,k], and `probs`, FP32 [N,k]). The peer in benches/peers.sh.

Usage: python kserve_onnx.py MODEL.onnx NAME HTTP_PORT GRPC_PORT [K]
"""

import sys

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class OnnxTopK(Model):
    """One ONNX model in one ONNX Runtime session (1 intra-op thread, as vp-variant runs by default)."""

    def __init__(self, name: str, path: str, k: int):
        super().__init__(name)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.k = k
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        probs = self.session.run(None, {self.input: x})[0]
        classes = np.argsort(-probs, axis=1, kind="stable")[:, : self.k]
        top = np.take_along_axis(probs, classes, axis=1)
        binary = payload.use_binary_outputs if hasattr(payload, "use_binary_outputs") else False
        outputs = []
        for name, array, dtype in (("classes", classes.astype(np.int64), "INT64"), ("probs", top, "FP32")):
            out = InferOutput(name=name, shape=list(array.shape), datatype=dtype)
            out.set_data_from_numpy(array, binary_data=binary)
            outputs.append(out)
        return InferResponse(
            model_name=self.name, infer_outputs=outputs, response_id=payload.id or "", use_binary_outputs=binary
        )


def main() -> None:
    path, name, http_port, grpc_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    k = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    model = OnnxTopK(name, path, k)
    ModelServer(
        http_port=http_port, grpc_port=grpc_port, workers=1, enable_latency_logging=False
    ).start([model])


if __name__ == "__main__":
    main()
