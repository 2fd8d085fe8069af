"""Triton's `tritonclient.grpc` against the OIP gRPC endpoint of both servers (real processes): health,
metadata and model readiness with and without a version; infer at batch 1 and 8 with raw contents (the client's
only encoding) giving the same answers as HTTP; typed `uint_contents` through the client's own generated stub;
`top_k`; and the error cases with their gRPC status codes and messages.

Runs in its own pytest process (scripts/test-oip.sh): tritonclient.grpc and the KServe SDK both register the
`inference.*` protobuf messages, and the protobuf runtime refuses a second registration in one process."""

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

SERVERS = ["aggregator", "variant"]
OUTPUTS = {"aggregator": ("class", "scores"), "variant": ("classes", "probs")}


def client(addr):
    return tgrpc.InferenceServerClient(addr)


def infer(c, model, batch, datatype="UINT8", **kw):
    inp = tgrpc.InferInput("image", list(batch.shape), datatype)
    inp.set_data_from_numpy(batch)
    return c.infer(model, [inp], client_timeout=30, **kw)


def status_of(e):
    return e.value.status(), e.value.message()


@pytest.mark.parametrize("server", SERVERS)
def test_health_metadata_and_versions(ensemble, server):
    addr, model = ensemble["grpc"][server]
    c = client(addr)
    assert c.is_server_live() and c.is_server_ready()
    assert c.get_server_metadata().name == f"vp-{server}"
    meta = c.get_model_metadata(model)
    assert meta.name == model and list(meta.versions) == ["1"]
    assert (meta.inputs[0].name, meta.inputs[0].datatype, list(meta.inputs[0].shape)) == \
        ("image", "UINT8", [-1, 1, 28, 28])
    assert [o.name for o in meta.outputs] == list(OUTPUTS[server])
    assert c.get_model_metadata(model, model_version="1") == meta
    assert c.is_model_ready(model) and c.is_model_ready(model, model_version="1")
    assert not c.is_model_ready(model, model_version="2")
    assert not c.is_model_ready("no-such-model")
    with pytest.raises(InferenceServerException) as e:
        c.get_model_metadata(model, model_version="2")
    assert status_of(e)[0] == "StatusCode.NOT_FOUND" and 'no version "2"' in status_of(e)[1]
    with pytest.raises(InferenceServerException) as e:
        c.get_model_metadata("no-such-model")
    assert status_of(e)[0] == "StatusCode.NOT_FOUND" and "unknown model" in status_of(e)[1]


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("n", [1, 8])
def test_raw_and_typed_contents_agree_with_http(ensemble, images, server, n):
    addr, model = ensemble["grpc"][server]
    url, _ = ensemble[server]
    batch = images[0][:n]
    first, second = OUTPUTS[server]
    c = client(addr)
    r = infer(c, model, batch, model_version="1")
    got = (r.as_numpy(first), r.as_numpy(second))
    assert got[0].shape[0] == n
    if server == "aggregator":
        params = r.get_response().parameters
        assert params["degraded"].bool_param is False
        assert params["k"].int64_param == 3

    # The same request over HTTP (JSON) answers the same.
    h = thttp.InferenceServerClient(url.removeprefix("http://"), network_timeout=30)
    hi = thttp.InferInput("image", list(batch.shape), "UINT8")
    hi.set_data_from_numpy(batch, binary_data=False)
    hr = h.infer(model, [hi])
    np.testing.assert_array_equal(got[0], hr.as_numpy(first))
    np.testing.assert_allclose(got[1], hr.as_numpy(second), rtol=1e-6)

    # Typed contents (uint_contents) through the client's generated stub answer the same too.
    req = service_pb2.ModelInferRequest(model_name=model, id="typed")
    t = req.inputs.add(name="image", datatype="UINT8", shape=list(batch.shape))
    t.contents.uint_contents.extend(int(x) for x in batch.flatten())
    reply = c._client_stub.ModelInfer(req, timeout=30)
    assert reply.id == "typed" and reply.model_version == "1"
    assert [o.name for o in reply.outputs] == [first, second]
    typed0 = np.frombuffer(reply.raw_output_contents[0], dtype=np.int64).reshape(got[0].shape)
    typed1 = np.frombuffer(reply.raw_output_contents[1], dtype=np.float32).reshape(got[1].shape)
    np.testing.assert_array_equal(typed0, got[0])
    np.testing.assert_allclose(typed1, got[1], rtol=1e-6)


@pytest.mark.parametrize("server", SERVERS)
def test_accuracy_top_k_and_requested_outputs(ensemble, images, server):
    addr, model = ensemble["grpc"][server]
    px, labels = images
    c = client(addr)
    r = infer(c, model, px)
    top = r.as_numpy(OUTPUTS[server][0])
    top1 = top if server == "aggregator" else top[:, 0]
    assert (top1 == labels).mean() >= 0.75
    r = infer(c, model, px[:2], parameters={"top_k": 2})
    if server == "variant":
        assert r.as_numpy("classes").shape == (2, 2)
    else:
        assert r.get_response().parameters["k"].int64_param == 2
    only = infer(c, model, px[:2], outputs=[tgrpc.InferRequestedOutput(OUTPUTS[server][1])])
    assert [o.name for o in only.get_response().outputs] == [OUTPUTS[server][1]]


@pytest.mark.parametrize("server", SERVERS)
def test_errors_have_grpc_codes_and_messages(ensemble, images, server):
    addr, model = ensemble["grpc"][server]
    px = images[0]
    c = client(addr)

    def refused(code, text, **kw):
        batch = kw.pop("batch", px[:2])
        name = kw.pop("model", model)
        with pytest.raises(InferenceServerException) as e:
            infer(c, name, batch, **kw)
        assert status_of(e)[0] == f"StatusCode.{code}", status_of(e)
        assert text in status_of(e)[1], status_of(e)

    refused("NOT_FOUND", "unknown model", model="no-such-model")
    refused("NOT_FOUND", 'no version "3"', model_version="3")
    refused("INVALID_ARGUMENT", "must have shape [N, 1, 28, 28]", batch=np.zeros((2, 1, 28, 27), np.uint8))
    refused("INVALID_ARGUMENT", "must have datatype UINT8", batch=px[:2].astype(np.float32),
            datatype="FP32")
    refused("INVALID_ARGUMENT", 'unknown parameter "priority"', priority=1)
    refused("INVALID_ARGUMENT", 'unknown parameter "mode"', parameters={"mode": "fast"})
    refused("INVALID_ARGUMENT", "k and top_k are the same parameter", parameters={"k": 2, "top_k": 2})
    refused("INVALID_ARGUMENT", "k must be", parameters={"top_k": 9})
    refused("INVALID_ARGUMENT", 'unknown output "logits"', outputs=[tgrpc.InferRequestedOutput("logits")])
    refused("INVALID_ARGUMENT", 'unknown parameter "classification"',
            outputs=[tgrpc.InferRequestedOutput(OUTPUTS[server][1], class_count=3)])
    # Raw contents of the wrong size, sent through the generated stub (the client checks sizes itself).
    req = service_pb2.ModelInferRequest(model_name=model)
    req.inputs.add(name="image", datatype="UINT8", shape=[1, 1, 28, 28])
    req.raw_input_contents.append(bytes(783))
    with pytest.raises(Exception) as e:
        c._client_stub.ModelInfer(req, timeout=30)
    assert "INVALID_ARGUMENT" in str(e.value.code()) and "must hold 784 bytes, got 783" in e.value.details()
    # A message larger than the server's cap (its HTTP body limit) is refused before it is decoded.
    with pytest.raises(InferenceServerException) as e:
        infer(c, model, np.zeros((4096, 1, 28, 28), np.uint8))
    assert status_of(e)[0] == "StatusCode.OUT_OF_RANGE" and "message length too large" in status_of(e)[1], \
        status_of(e)
    # The server still answers after all of that.
    assert infer(c, model, px[:1]).as_numpy(OUTPUTS[server][0]).shape[0] == 1
