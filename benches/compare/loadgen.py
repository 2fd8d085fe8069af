"""The comparison's client, run inside the gateway's namespace: sends the chosen test images one per request
(batch 1, an "atomic input") with a fixed number in flight, and records per request the latency, whether it was
answered and the answered class.

- vp, cp: POST the OIP v2 JSON request to the scheme's aggregator on the gateway (127.0.0.1); the reply's `class`.
- mp: POST the same JSON (plus `id` and `reply_to`) to the first stage; the last stage posts the classes to this
  process's result listener; latency runs from sending to receiving that post.
A request is unanswered when it gets no answer within --timeout (or an error status).

    python loadgen.py JOB.json   # JOB: {"scheme", "target", "images" (.npy), "indices", "concurrency",
                                 #       "timeout_s", "k", "listen" (mp)}; prints the records as JSON
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


class Results:
    """Answers posted back by the last MP stage, by request id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: dict[str, tuple[threading.Event, list]] = {}

    def expect(self, rid: str) -> tuple[threading.Event, list]:
        slot = (threading.Event(), [])
        with self.lock:
            self.waiting[rid] = slot
        return slot

    def forget(self, rid: str) -> None:
        with self.lock:
            self.waiting.pop(rid, None)

    def deliver(self, rid: str, payload: dict) -> None:
        with self.lock:
            slot = self.waiting.pop(rid, None)
        if slot is not None:
            slot[1].append((time.perf_counter(), payload))
            slot[0].set()


def listener(addr: str, results: Results) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            # Headers and body leave in separate writes: without TCP_NODELAY, Nagle's algorithm holds the second
            # until the peer's delayed ACK (tens of ms per hop).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = 200
            try:
                msg = json.loads(body)
                results.deliver(str(msg["id"]), msg)
            except (KeyError, json.JSONDecodeError):
                status = 400
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

    host, _, port = addr.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def request_body(image: np.ndarray, k: int, extra: dict | None = None) -> bytes:
    req = {"inputs": [{"name": "image", "shape": [1, *image.shape], "datatype": "UINT8",
                       "data": image.reshape(-1).tolist()}], "parameters": {"k": k}}
    if extra:
        req["id"] = extra.pop("id")
        req["parameters"].update(extra)
    return json.dumps(req, separators=(",", ":")).encode()


def run(job: dict) -> list[list]:
    images = np.load(job["images"])
    scheme, timeout = job["scheme"], float(job["timeout_s"])
    host, _, port = job["target"].rpartition(":")
    work: queue.Queue = queue.Queue()
    for i in job["indices"]:
        work.put(int(i))
    records: list[list] = []
    rec_lock = threading.Lock()
    results = Results()
    server = listener(job["listen"], results) if scheme == "mp" else None
    path = "/v2/models/stage/infer" if scheme == "mp" else f"/v2/models/{job.get('model', 'x')}/infer"

    def worker() -> None:
        conn = None
        while True:
            try:
                i = work.get_nowait()
            except queue.Empty:
                break
            rid = f"{threading.get_ident()}-{i}-{time.monotonic_ns()}"
            answer: int | None = None
            t0 = time.perf_counter()
            t1 = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
                if scheme == "mp":
                    event, box = results.expect(rid)
                    body = request_body(images[i], job["k"], {"id": rid, "reply_to": job["listen"]})
                else:
                    body = request_body(images[i], job["k"])
                t0 = time.perf_counter()
                conn.request("POST", path, body, {"content-type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if scheme == "mp":
                    if resp.status == 202 and event.wait(max(0.0, timeout - (time.perf_counter() - t0))):
                        t1, msg = box[0]
                        answer = int(msg["outputs"][0]["data"][0])
                    results.forget(rid)
                elif resp.status == 200:
                    t1 = time.perf_counter()
                    answer = int(json.loads(data)["outputs"][0]["data"][0])
            except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError):
                if conn is not None:
                    conn.close()
                conn = None
            lat = None if answer is None or t1 is None else round((t1 - t0) * 1000.0, 3)
            with rec_lock:
                records.append([i, lat, answer])
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(int(job["concurrency"]))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if server is not None:
        server.shutdown()
    return [["wall_s", round(wall, 3)], *records]


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python loadgen.py JOB.json", file=sys.stderr)
        return 2
    try:
        job = json.loads(open(sys.argv[1]).read())
        print(json.dumps(run(job)))
    except (OSError, KeyError, ValueError) as e:
        print(f"loadgen: {e!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
