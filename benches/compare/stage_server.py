"""One model-parallel stage on one device: an OIP-v2-style HTTP server that runs its ONNX sub-graph on the tensor it
receives and forwards the result to the next stage; the last stage posts the top-k classes straight back to the
client (`reply_to`), so the answer does not travel back along the chain.

Wire format (the OIP v2 REST request, with the OIP binary tensor extension between stages):
- POST /v2/models/stage/infer, JSON: {"id", "inputs": [{"name", "shape", "datatype", "data"}],
  "parameters": {"reply_to": "HOST:PORT", "k": K}} (what the client sends to the first stage: the same body a
  variant server gets), or the binary form: header `Inference-Header-Content-Length: L`, body = L bytes of that
  JSON with "parameters": {"binary_data_size": B} in place of "data", then B raw little-endian bytes.
- The stage answers 202 as soon as it has the body, then computes and forwards (binary, FP32).
- The last stage POSTs {"id", "outputs": [{"name": "classes", "data": [...]}, {"name": "probs", ...}]} (JSON) to
  http://REPLY_TO/result.
A request that cannot be forwarded (the next device is dead or cut off) is dropped and logged: in model
parallelism nobody else can compute the rest of the network, so the client's timeout is the failure signal.

Python with ONNX Runtime (1 intra-op thread), not a Rust binary: see docs/benchmarks.md for what that costs.

    python stage_server.py --model stage1.onnx --listen 10.77.0.11:9301 [--next 10.77.0.12:9301]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnxruntime as ort

DTYPES = {"UINT8": np.uint8, "FP32": np.float32}
NAMES = {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32"}
TIMEOUT_S = 5.0


class BadRequest(ValueError):
    """The request cannot be decoded."""


def decode(body: bytes, header_len: int | None) -> tuple[dict, np.ndarray]:
    """(request JSON, input tensor) from a JSON or binary-extension body."""
    try:
        if header_len is None:
            req = json.loads(body)
            inp = req["inputs"][0]
            arr = np.asarray(inp["data"], dtype=DTYPES[inp["datatype"]])
        else:
            if not 0 < header_len <= len(body):
                raise BadRequest(f"Inference-Header-Content-Length {header_len} outside the body")
            req = json.loads(body[:header_len])
            inp = req["inputs"][0]
            arr = np.frombuffer(body[header_len:], dtype=DTYPES[inp["datatype"]])
        shape = [int(d) for d in inp["shape"]]
        if int(np.prod(shape)) != arr.size:
            raise BadRequest(f"shape {shape} does not hold {arr.size} values")
        return req, arr.reshape(shape)
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
        raise BadRequest(f"malformed request: {e!r}") from e


def encode_binary(req_id: str, name: str, tensor: np.ndarray, params: dict) -> tuple[bytes, int]:
    """(body, header length) of a binary-extension request carrying `tensor`."""
    raw = np.ascontiguousarray(tensor).tobytes()
    header = json.dumps({"id": req_id, "inputs": [{"name": name, "shape": list(tensor.shape),
                                                    "datatype": NAMES[tensor.dtype],
                                                    "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": params}, separators=(",", ":")).encode()
    return header + raw, len(header)


def topk(probs: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """Top-k of one row, most likely first, the lower class first among equal values."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [int(i) for i in order], [float(probs[i]) for i in order]


class Peer:
    """A keep-alive HTTP connection per thread to one address, reopened after an error."""

    def __init__(self, addr: str) -> None:
        self.host, _, port = addr.rpartition(":")
        self.port = int(port)
        self.local = threading.local()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S)
        try:
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            raise


def make_handler(sess: ort.InferenceSession, nxt: Peer | None):
    in_name = sess.get_inputs()[0].name
    out_name = sess.get_outputs()[0].name
    replies: dict[str, Peer] = {}
    lock = threading.Lock()

    def reply_peer(addr: str) -> Peer:
        with lock:
            return replies.setdefault(addr, Peer(addr))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args) -> None:  # no per-request access log
            pass

        def setup(self) -> None:
            super().setup()
            # Headers and body leave in separate writes: without TCP_NODELAY, Nagle's algorithm holds the second
            # until the peer's delayed ACK (tens of ms per hop).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _answer(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def do_GET(self) -> None:
            if self.path in ("/v2/health/ready", "/v2/health/live"):
                self._answer(200, {"ready": True})
            else:
                self._answer(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("content-length", "-1"))
                if length < 0:
                    self._answer(411, {"error": "content-length required"})
                    return
                body = self.rfile.read(length)
                hl = self.headers.get("inference-header-content-length")
                req, x = decode(body, int(hl) if hl is not None else None)
                params = req.get("parameters") or {}
                if "reply_to" not in params:
                    raise BadRequest("parameters.reply_to missing")
            except (BadRequest, ValueError) as e:
                self._answer(400, {"error": str(e)})
                return
            self._answer(202, {"accepted": True})
            try:
                y = sess.run([out_name], {in_name: x})[0]
                if nxt is not None:
                    out, n = encode_binary(str(req.get("id", "")), "activation", y, params)
                    nxt.post("/v2/models/stage/infer", out, {"inference-header-content-length": str(n),
                                                             "content-type": "application/octet-stream"})
                else:
                    k = int(params.get("k", 3))
                    classes, probs = topk(y[0], k)
                    msg = json.dumps({"id": req.get("id"), "outputs": [
                        {"name": "classes", "shape": [1, k], "datatype": "INT64", "data": classes},
                        {"name": "probs", "shape": [1, k], "datatype": "FP32", "data": probs}]}).encode()
                    reply_peer(str(params["reply_to"])).post("/result", msg, {"content-type": "application/json"})
            except (OSError, http.client.HTTPException, ort.capi.onnxruntime_pybind11_state.Fail) as e:
                print(f"stage: request {req.get('id')} dropped: {e!r}", file=sys.stderr, flush=True)

    return Handler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--listen", required=True, help="HOST:PORT")
    ap.add_argument("--next", default=None, help="HOST:PORT of the next stage (absent: this is the last)")
    args = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
        host, _, port = args.listen.rpartition(":")
        server = ThreadingHTTPServer((host, int(port)), make_handler(sess, Peer(args.next) if args.next else None))
    except (OSError, ValueError, ort.capi.onnxruntime_pybind11_state.Fail) as e:
        print(f"stage: cannot start: {e}", file=sys.stderr)
        return 1
    server.daemon_threads = True
    print(f"stage: serving {args.model} on {args.listen}, next {args.next or '(client)'}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
