"""KServe's Python model server (the `kserve` package's ModelServer) serving one ONNX model for benches/peers.sh with
onnx_topk.OnnxTopK (outputs `classes` and `probs`, as vp-variant).

Usage: python kserve_onnx.py MODEL.onnx NAME HTTP_PORT GRPC_PORT
"""

import sys

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from onnx_topk import OnnxTopK


class OnnxModel(Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.topk = OnnxTopK(path)
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        classes, probs = self.topk(payload.inputs[0].as_numpy())
        binary = payload.use_binary_outputs if hasattr(payload, "use_binary_outputs") else False
        outputs = []
        for name, array, dtype in (("classes", classes, "INT64"), ("probs", probs, "FP32")):
            out = InferOutput(name=name, shape=list(array.shape), datatype=dtype)
            out.set_data_from_numpy(array, binary_data=binary)
            outputs.append(out)
        return InferResponse(
            model_name=self.name, infer_outputs=outputs, response_id=payload.id or "", use_binary_outputs=binary
        )


def main() -> None:
    path, name, http_port, grpc_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ModelServer(
        http_port=http_port, grpc_port=grpc_port, workers=1, enable_latency_logging=False
    ).start([OnnxModel(name, path)])


if __name__ == "__main__":
    main()
