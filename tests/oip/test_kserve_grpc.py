"""The KServe SDK's gRPC client (`InferenceGRPCClient`) against the OIP gRPC endpoint of both servers: health,
model readiness, infer at batch 1 and 8 with raw contents (numpy input, the SDK's default: it also sends
`binary_data_size`) and with typed contents (a list input), both answering the same, and the error cases
surfaced as `grpc.RpcError` with their codes."""

import asyncio

import grpc
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

SERVERS = ["aggregator", "variant"]
OUTPUTS = {"aggregator": ("class", "scores"), "variant": ("classes", "probs")}


def request(model, batch, typed=False, outputs=None, parameters=None):
    inp = InferInput("image", list(batch.shape), "UINT8")
    if typed:
        inp.set_data_from_numpy(batch, binary_data=False)
    else:
        inp.set_data_from_numpy(batch)
    return InferRequest(model_name=model, infer_inputs=[inp], request_outputs=outputs, parameters=parameters)


@pytest.mark.parametrize("server", SERVERS)
def test_kserve_grpc_client(ensemble, images, server):
    addr, model = ensemble["grpc"][server]
    px, labels = images
    first, second = OUTPUTS[server]

    async def run():
        async with InferenceGRPCClient(url=addr, timeout=30) as c:
            assert await c.is_server_live() and await c.is_server_ready()
            assert await c.is_model_ready(model)
            assert not await c.is_model_ready("no-such-model")
            for n in (1, 8):
                raw = await c.infer(request(model, px[:n]))
                typed = await c.infer(request(model, px[:n], typed=True))
                assert [o.name for o in raw.outputs] == [first, second]
                a, b = raw.outputs[0].as_numpy(), typed.outputs[0].as_numpy()
                assert a.shape[0] == n
                np.testing.assert_array_equal(a, b)
                np.testing.assert_allclose(raw.outputs[1].as_numpy(), typed.outputs[1].as_numpy(), rtol=1e-6)
            whole = await c.infer(request(model, px))
            top = whole.outputs[0].as_numpy()
            assert ((top if server == "aggregator" else top[:, 0]) == labels).mean() >= 0.75
            one = await c.infer(request(model, px[:2], outputs=[RequestedOutput(second)]))
            assert [o.name for o in one.outputs] == [second]
            k2 = await c.infer(request(model, px[:2], parameters={"top_k": 2}))
            if server == "variant":
                assert k2.outputs[0].as_numpy().shape == (2, 2)
            errors = [
                (request("no-such-model", px[:1]), grpc.StatusCode.NOT_FOUND, "unknown model"),
                (request(model, np.zeros((1, 1, 27, 28), np.uint8)), grpc.StatusCode.INVALID_ARGUMENT,
                 "must have shape"),
                (request(model, px[:1], parameters={"priority": 1}), grpc.StatusCode.INVALID_ARGUMENT,
                 'unknown parameter "priority"'),
                (request(model, px[:1], outputs=[RequestedOutput("logits")]), grpc.StatusCode.INVALID_ARGUMENT,
                 'unknown output "logits"'),
            ]
            for req, code, text in errors:
                with pytest.raises(grpc.RpcError) as e:
                    await c.infer(req)
                assert e.value.code() == code and text in e.value.details(), (e.value.code(), e.value.details())

    asyncio.run(run())
