"""The official Open Inference Protocol clients nobody here wrote, against both servers as real processes:
Triton's `tritonclient.http` and the KServe SDK's `InferenceRESTClient`. Health, metadata and model readiness
with and without a version; infer at batch 1 and 8 in JSON and with the binary tensor extension (request and
reply), all encodings giving the same answers; `top_k`; and the error cases, each a JSON error the clients
surface with its message."""

import asyncio
import json
import urllib.error
import urllib.request

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from tritonclient.utils import InferenceServerException

SERVERS = ["aggregator", "variant"]
OUTPUTS = {"aggregator": ("class", "scores"), "variant": ("classes", "probs")}


def top1(server, result):
    """Top-1 class per sample from a client's result (`as_numpy(name)`)."""
    first = result(OUTPUTS[server][0])
    return first if server == "aggregator" else first[:, 0]


def triton_client(url):
    return triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=30)


def triton_infer(client, model, batch, binary_in, binary_out, **kw):
    inp = triton.InferInput("image", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch, binary_data=binary_in)
    outputs = kw.pop("outputs", None)
    if outputs is None and binary_out is not None:
        outputs = [triton.InferRequestedOutput(n, binary_data=binary_out) for n in kw.pop("names")]
    return client.infer(model, [inp], outputs=outputs, **kw)


@pytest.mark.parametrize("server", SERVERS)
def test_triton_health_metadata_and_versions(ensemble, server):
    url, model = ensemble[server]
    c = triton_client(url)
    assert c.is_server_live() and c.is_server_ready()
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
    meta = c.get_model_metadata(model)
    assert meta["versions"] == ["1"]
    assert c.get_model_metadata(model, model_version="1") == meta
    assert meta["inputs"][0] == {"name": "image", "datatype": "UINT8", "shape": [-1, 1, 28, 28]}
    assert c.is_model_ready(model) and c.is_model_ready(model, model_version="1")
    assert not c.is_model_ready(model, model_version="2")
    assert not c.is_model_ready("no-such-model")
    with pytest.raises(InferenceServerException) as e:
        c.get_model_metadata(model, model_version="2")
    assert e.value.status() == "404" and 'no version "2"' in e.value.message()


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("n", [1, 8])
def test_triton_infer_json_and_binary_agree(ensemble, images, server, n):
    url, model = ensemble[server]
    c = triton_client(url)
    batch = images[0][:n]
    answers = []

    def keep(r):
        if server == "aggregator":
            # Answers are comparable only when all variants took part.
            assert r.get_response()["parameters"]["degraded"] is False, r.get_response()
        answers.append((r.as_numpy(OUTPUTS[server][0]), r.as_numpy(OUTPUTS[server][1])))

    # The client's default first (binary in, no outputs named: binary_data_output), then each combination.
    keep(triton_infer(c, model, batch, True, None))
    for binary_in in (False, True):
        for binary_out in (False, True):
            keep(triton_infer(c, model, batch, binary_in, binary_out, names=OUTPUTS[server],
                              model_version="1" if binary_in else ""))
    for first, second in answers[1:]:
        np.testing.assert_array_equal(first, answers[0][0])
        np.testing.assert_array_equal(second, answers[0][1])
    first, second = answers[0]
    if server == "aggregator":
        assert first.shape == (n,) and second.shape == (n, 10) and second.dtype == np.float32
    else:
        assert first.shape == (n, 3) and first.dtype == np.int64 and second.shape == (n, 3)


@pytest.mark.parametrize("server", SERVERS)
def test_triton_answers_are_right(ensemble, images, server):
    url, model = ensemble[server]
    px, labels = images
    r = triton_infer(triton_client(url), model, px, True, None)
    accuracy = float(np.mean(top1(server, r.as_numpy) == labels))
    # The family's models score 86-91 % on the test set; 64 images leave room for sampling noise.
    assert accuracy >= 0.75, accuracy


@pytest.mark.parametrize("server", SERVERS)
def test_triton_parameters_and_errors(ensemble, images, server):
    url, model = ensemble[server]
    c = triton_client(url)
    batch = images[0][:2]
    r = triton_infer(c, model, batch, True, None, parameters={"top_k": 2})
    if server == "variant":
        assert r.as_numpy("classes").shape == (2, 2)
    else:
        assert r.get_response()["parameters"]["k"] == 2
    one = triton_infer(c, model, batch, True, None,
                       outputs=[triton.InferRequestedOutput(OUTPUTS[server][1], binary_data=True)])
    assert one.as_numpy(OUTPUTS[server][0]) is None and one.as_numpy(OUTPUTS[server][1]) is not None

    def fails(status, text, **kw):
        with pytest.raises(InferenceServerException) as e:
            kw.setdefault("model", model)
            kw.setdefault("batch", batch)
            triton_infer(c, kw.pop("model"), kw.pop("batch"), kw.pop("binary", True), None, **kw)
        assert e.value.status() == status and text in e.value.message(), e.value

    fails("400", 'unknown parameter "priority"', priority=1)
    fails("400", 'unknown parameter "colour"', parameters={"colour": "red"})
    fails("400", "give one of them", parameters={"k": 2, "top_k": 2})
    fails("400", "between 1 and 5", parameters={"top_k": 9})
    fails("400", "shape [N, 1, 28, 28]", batch=images[0][:2, :, :27])
    fails("400", "shape [N, 1, 28, 28]", batch=images[0][:2, :, :27], binary=False)
    fails("404", "unknown model", model="nope")
    fails("404", 'no version "3"', model_version="3")
    fails("400", 'unknown output "logits"', outputs=[triton.InferRequestedOutput("logits")])
    fp32 = triton.InferInput("image", [1, 1, 28, 28], "FP32")
    fp32.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(InferenceServerException) as e:
        c.infer(model, [fp32])
    assert e.value.status() == "400" and "UINT8" in e.value.message()


@pytest.mark.parametrize("server", SERVERS)
def test_every_error_is_json_405_included(ensemble, server):
    url, model = ensemble[server]
    for method, path, status in [
        ("GET", f"/v2/models/{model}/infer", 405),
        ("DELETE", f"/v2/models/{model}", 405),
        ("GET", f"/v2/models/{model}/versions/9/ready", 404),
        ("GET", "/v2/nothing/here", 404),
    ]:
        req = urllib.request.Request(url + path, method=method)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == status
        assert e.value.headers["content-type"].startswith("application/json")
        body = json.loads(e.value.read())
        assert isinstance(body["error"], str) and body["error"], body


def kserve_infer(client, url, model, batch, binary, outputs=None):
    inp = InferInput("image", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch, binary_data=binary)
    req = InferRequest(model, [inp], request_outputs=outputs)
    return client.infer(url, req, model_name=model)


@pytest.mark.parametrize("server", SERVERS)
def test_kserve_rest_client(ensemble, images, server):
    url, model = ensemble[server]
    px, labels = images

    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        try:
            assert await client.is_server_live(url)
            assert await client.is_server_ready(url)
            assert await client.is_model_ready(url, model)
            assert not await client.is_model_ready(url, "no-such-model")
            answers = []
            for n in (1, 8):
                for binary in (False, True):
                    r = await kserve_infer(client, url, model, px[:n], binary)
                    out = {o.name: o.as_numpy() for o in r.outputs}
                    answers.append((n, out))
            binary_reply = await kserve_infer(
                client, url, model, px[:8], True,
                outputs=[RequestedOutput(n, {"binary_data": True}) for n in OUTPUTS[server]])
            answers.append((8, {o.name: o.as_numpy() for o in binary_reply.outputs}))
            with pytest.raises(httpx.HTTPStatusError) as e:
                await kserve_infer(client, url, model, px[:2, :, :27], True)
            assert e.value.response.status_code == 400 and "shape" in str(e.value)
            return answers
        finally:
            await client.close()

    answers = asyncio.run(run())
    by_n = {}
    for n, out in answers:
        assert set(out) == set(OUTPUTS[server])
        if n in by_n:
            for name in OUTPUTS[server]:
                np.testing.assert_array_equal(out[name], by_n[n][name])
        by_n[n] = out
    np.testing.assert_array_equal(by_n[8][OUTPUTS[server][0]][:1], by_n[1][OUTPUTS[server][0]])
    accuracy = float(np.mean(top1(server, lambda name: by_n[8][name]) == labels[:8]))
    assert accuracy >= 0.5, accuracy
