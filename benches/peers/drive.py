"""Drives OIP servers serving the same ONNX model with the same official client (tritonclient 2.73, http and grpc) and
prints/writes latency and throughput per server and wire, and each measure of the first server (vp-variant) as a
ratio of every other server's on the same wire. Used by benches/peers.sh.

Latency: batch 1, one request in flight, the servers and wires interleaved request by request (so every
combination sees the same images and the same machine). Throughput: C client threads (one client each) for a fixed
time per combination, the combinations in rotation, two rounds.

Before timing, 50 images per server and wire must give identical top-k classes everywhere. A wire a server is
declared not to speak (WIRES, `+`-separated, default all three) is tried once, and the server's refusal is recorded.

Usage: python drive.py OUT.json DATA_DIR NAME=HTTP_URL,GRPC_ADDR,MODEL[,WIRES] [NAME=...]
"""

import gzip
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

LATENCY_ROUNDS = int(os.environ.get("PEERS_LATENCY_ROUNDS", "400"))  # smaller for a smoke test
THROUGHPUT_SECONDS = float(os.environ.get("PEERS_SECONDS", "4"))
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


def unsupported(servers, imgs):
    """The answer of each server to one request on each wire it is declared not to speak (expected: an error)."""
    out = {}
    for s, (url, addr, model, wires) in servers.items():
        for w in WIRES:
            if w not in wires:
                try:
                    Caller(w, url, addr, model).call(imgs[:1])
                    out[f"{s}/{w}"] = "answered (declared unsupported, but it worked)"
                except Exception as e:  # the refusal is the result
                    out[f"{s}/{w}"] = f"{type(e).__name__}: {e}"[:400]
    return out


def latency(servers, imgs):
    callers = {(s, w): Caller(w, *servers[s][:3]) for s in servers for w in servers[s][3]}
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
            for w in servers[s][3]:
                callers = [Caller(w, *servers[s][:3]) for _ in range(conc)]
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


def batching(servers):
    """Requests per model execution over the whole run, where the server reports both (Triton's statistics
    extension, `GET /v2/models/NAME/stats`): above 1, its dynamic batcher ran concurrent requests as one batch."""
    out = {}
    for s, (url, _, model, _) in servers.items():
        try:
            with urllib.request.urlopen(f"{url}/v2/models/{model}/stats", timeout=10) as r:
                stats = json.load(r)["model_stats"][0]
        except Exception:  # the other servers have no such endpoint
            continue
        inferences, executions = stats["inference_count"], stats["execution_count"]
        out[s] = {"inference_count": inferences, "execution_count": executions,
                  "requests_per_execution": round(inferences / executions, 2) if executions else None}
    return out


def ratios(result, servers):
    """vp-variant (the first server) / each peer on each wire both speak: p50, p99, and mean throughput."""
    first, out = next(iter(servers)), {}
    for peer in list(servers)[1:]:
        for w in servers[first][3]:
            if w not in servers[peer][3]:
                continue
            a, b = result["latency_batch1"][f"{first}/{w}"], result["latency_batch1"][f"{peer}/{w}"]
            r = {"p50": round(a["p50_ms"] / b["p50_ms"], 2), "p99": round(a["p99_ms"] / b["p99_ms"], 2)}
            for c in CONCURRENCY:
                ta, tb = (statistics.mean(result[f"throughput_c{c}"][f"{x}/{w}"]["rps"]) for x in (first, peer))
                r[f"throughput_c{c}"] = round(ta / tb, 2) if tb else None
            out[f"{first}/{peer}/{w}"] = r
    return out


def main():
    out_path, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
    servers = {}
    for arg in sys.argv[3:]:
        name, spec = arg.split("=", 1)
        parts = spec.split(",")
        wires = tuple(w for w in WIRES if w in parts[3].split("+")) if len(parts) > 3 else WIRES
        servers[name] = (parts[0], parts[1], parts[2], wires)
    imgs = images(data_dir, 1000)
    t0, load0 = time.time(), os.getloadavg()
    result = {"unsupported": unsupported(servers, imgs), "latency_batch1": latency(servers, imgs)}
    for c in CONCURRENCY:
        result[f"throughput_c{c}"] = throughput(servers, imgs, c)
    result["ratios"] = ratios(result, servers)
    result["batching"] = batching(servers)
    result["run"] = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "wall_s": round(time.time() - t0, 1),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    for key, why in result["unsupported"].items():
        print(f"{key}: not offered: {why}")
    print("| server / wire | p50 ms | p99 ms | " + " | ".join(f"req/s, {c} in flight (2 rounds)" for c in CONCURRENCY)
          + " |")
    print("|---|---:|---:|" + "---:|" * len(CONCURRENCY))
    for key, lat in result["latency_batch1"].items():
        cols = []
        for c in CONCURRENCY:
            t = result[f"throughput_c{c}"][key]
            cols.append(" / ".join(str(r) for r in t["rps"]) + (f" ({t['errors']} errors)" if t["errors"] else ""))
        print(f"| {key} | {lat['p50_ms']} | {lat['p99_ms']} | " + " | ".join(cols) + " |")
    print("\n| vp-variant / peer, wire | p50 | p99 | " + " | ".join(f"req/s, {c} in flight" for c in CONCURRENCY) + " |")
    print("|---|---:|---:|" + "---:|" * len(CONCURRENCY))
    for key, r in result["ratios"].items():
        cols = [f"{r[f'throughput_c{c}']}x" for c in CONCURRENCY]
        print(f"| {key} | {r['p50']}x | {r['p99']}x | " + " | ".join(cols) + " |")
    print(f"batching: {result['batching']}\nrun: {result['run']}")


if __name__ == "__main__":
    main()
