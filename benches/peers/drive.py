"""Drives two OIP servers serving the same ONNX model with the same official client (tritonclient 2.73, http and
grpc) and prints/writes latency and throughput per server and wire. Used by benches/peers.sh.

Latency: batch 1, one request in flight, the servers and wires interleaved request by request (so every
combination sees the same images and the same machine). Throughput: C client threads (one client each) for a fixed
time per combination, the combinations in rotation, two rounds.

Usage: python drive.py OUT.json DATA_DIR NAME=HTTP_URL,GRPC_ADDR,MODEL [NAME=...]
"""

import gzip
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

LATENCY_ROUNDS = 400
THROUGHPUT_SECONDS = 4.0
CONCURRENCY = (8, 64)
WIRES = ("http-json", "http-binary", "grpc")


def images(data_dir: Path, n: int) -> np.ndarray:
    raw = gzip.open(data_dir / "t10k-images-idx3-ubyte.gz").read()
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n].copy()


class Caller:
    """One client of one wire to one server: `call(batch)` sends one inference and checks the answer's shape."""

    def __init__(self, wire: str, http_url: str, grpc_addr: str, model: str):
        self.wire, self.model = wire, model
        if wire == "grpc":
            self.client = tgrpc.InferenceServerClient(grpc_addr)
            self.mod = tgrpc
        else:
            self.client = thttp.InferenceServerClient(http_url.removeprefix("http://"), connection_timeout=10,
                                                      network_timeout=10)
            self.mod = thttp
        self.binary = wire != "http-json"

    def call(self, batch: np.ndarray) -> np.ndarray:
        inp = self.mod.InferInput("image", list(batch.shape), "UINT8")
        if self.wire == "grpc":
            inp.set_data_from_numpy(batch)
            outs = [self.mod.InferRequestedOutput("classes"), self.mod.InferRequestedOutput("probs")]
        else:
            inp.set_data_from_numpy(batch, binary_data=self.binary)
            outs = [self.mod.InferRequestedOutput(n, binary_data=self.binary) for n in ("classes", "probs")]
        # KServe's server reads a body without `Content-Type: application/json` as the binary extension; Triton's
        # client sends none, so the JSON wire names it (vp-variant needs no header either way).
        headers = {"Content-Type": "application/json"} if self.wire == "http-json" else None
        r = self.client.infer(self.model, [inp], outputs=outs, headers=headers)
        classes = r.as_numpy("classes")
        if classes.shape[0] != batch.shape[0]:
            raise RuntimeError(f"{self.wire}: wrong answer shape")
        return classes


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def latency(servers, imgs):
    callers = {(s, w): Caller(w, *servers[s]) for s in servers for w in WIRES}
    answers = {}
    for key, c in callers.items():  # warm-up; every server and wire must give the same top-k classes
        answers[key] = np.concatenate([c.call(imgs[i : i + 1]) for i in range(50)])
    first = next(iter(answers.values()))
    for key, a in answers.items():
        if not np.array_equal(a, first):
            raise RuntimeError(f"{key} answers differently from {next(iter(answers))}")
    times = {key: [] for key in callers}
    for i in range(LATENCY_ROUNDS):
        batch = imgs[i % len(imgs) : i % len(imgs) + 1]
        for key, c in callers.items():
            t = time.perf_counter()
            c.call(batch)
            times[key].append((time.perf_counter() - t) * 1000)
    return {f"{s}/{w}": {"p50_ms": round(statistics.median(v), 3), "p99_ms": round(pct(v, 99), 3), "n": len(v)}
            for (s, w), v in times.items()}


def throughput(servers, imgs, conc):
    out = {}
    for rnd in range(2):
        for s in servers:
            for w in WIRES:
                callers = [Caller(w, *servers[s]) for _ in range(conc)]
                stop = time.perf_counter() + THROUGHPUT_SECONDS
                done = [0] * conc
                errors = [0] * conc

                def run(j):
                    k = j
                    while time.perf_counter() < stop:
                        try:
                            callers[j].call(imgs[k % len(imgs) : k % len(imgs) + 1])
                            done[j] += 1
                        except Exception:  # counted, not fatal: a peer may refuse under load
                            errors[j] += 1
                        k += conc

                t0 = time.perf_counter()
                threads = [threading.Thread(target=run, args=(j,)) for j in range(conc)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                rate = sum(done) / (time.perf_counter() - t0)
                key = f"{s}/{w}"
                prev = out.get(key, {"rps": [], "errors": 0})
                prev["rps"].append(round(rate, 1))
                prev["errors"] += sum(errors)
                out[key] = prev
    return out


def main():
    out_path, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
    servers = {}
    for arg in sys.argv[3:]:
        name, spec = arg.split("=", 1)
        http_url, grpc_addr, model = spec.split(",")
        servers[name] = (http_url, grpc_addr, model)
    imgs = images(data_dir, 1000)
    result = {"latency_batch1": latency(servers, imgs)}
    for c in CONCURRENCY:
        result[f"throughput_c{c}"] = throughput(servers, imgs, c)
    out_path.write_text(json.dumps(result, indent=1))
    print("| server / wire | p50 ms | p99 ms | " + " | ".join(f"req/s, {c} in flight (2 rounds)" for c in CONCURRENCY)
          + " |")
    print("|---|---:|---:|" + "---:|" * len(CONCURRENCY))
    for key, lat in result["latency_batch1"].items():
        cols = []
        for c in CONCURRENCY:
            t = result[f"throughput_c{c}"][key]
            cols.append(" / ".join(str(r) for r in t["rps"]) + (f" ({t['errors']} errors)" if t["errors"] else ""))
        print(f"| {key} | {lat['p50_ms']} | {lat['p99_ms']} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
