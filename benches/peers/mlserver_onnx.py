"""Seldon MLServer's custom runtime for benches/peers.sh: an `MLModel` serving one ONNX model with onnx_topk.OnnxTopK
(outputs `classes` and `probs`, as vp-variant). Loaded by `mlserver start` from the environment: MLSERVER_MODEL_NAME,
MLSERVER_MODEL_URI (the .onnx file), MLSERVER_MODEL_IMPLEMENTATION=mlserver_onnx.OnnxRuntime, with this folder on
PYTHONPATH."""

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from onnx_topk import OnnxTopK


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        self.topk = OnnxTopK(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        classes, probs = self.topk(NumpyCodec.decode_input(payload.inputs[0]))
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output("classes", classes), NumpyCodec.encode_output("probs", probs)],
        )
