"""NVIDIA Triton Inference Server (the `tritonserver` binary that the `nvidia-pytriton` wheel ships) serving one ONNX
model for benches/peers.sh: PyTriton binds a Python callable that runs onnx_topk.OnnxTopK (outputs `classes` and
`probs`, as vp-variant) behind Triton's HTTP and gRPC front ends, with PyTriton's default dynamic batcher. The
statistics API (`GET /v2/models/NAME/stats`, which PyTriton puts behind an access token by default) is left open so
the bench can read how many requests each model execution ran.

Usage: python triton_onnx.py MODEL.onnx NAME HTTP_PORT GRPC_PORT METRICS_PORT WORKSPACE_DIR
"""

import sys

import numpy as np
from onnx_topk import OnnxTopK
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

MAX_BATCH = 256  # vp-variant's default --max-batch


def main() -> None:
    path, name, http_port, grpc_port, metrics_port, workspace = sys.argv[1:7]
    topk = OnnxTopK(path)

    @batch
    def infer(image: np.ndarray) -> dict:
        classes, probs = topk(image)
        return {"classes": classes, "probs": probs}

    config = TritonConfig(http_address="127.0.0.1", http_port=int(http_port), grpc_address="127.0.0.1",
                          grpc_port=int(grpc_port), metrics_port=int(metrics_port))
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    with Triton(config=config, workspace=workspace, security_config=security) as triton:
        triton.bind(
            model_name=name,
            infer_func=infer,
            inputs=[Tensor(name="image", dtype=np.uint8, shape=tuple(topk.session.get_inputs()[0].shape[1:]))],
            outputs=[Tensor(name="classes", dtype=np.int64, shape=(topk.k,)),
                     Tensor(name="probs", dtype=np.float32, shape=(topk.k,))],
            config=ModelConfig(max_batch_size=MAX_BATCH),
        )
        triton.serve()


if __name__ == "__main__":
    main()
