"""Fixtures of the OIP client compatibility suite: one real ensemble (every shipped variant of the family as a
`vp-variant` process plus a `vp-aggregator`, started by `vpctl run` on free loopback ports) for the whole session,
stopped at the end, and the first Fashion-MNIST test images with their labels."""

import gzip
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "models" / "fmnist" / "ensemble.yaml"
DATA = Path(os.environ.get("VP_DATA_DIR", "/usr/share/datasets/fashion-mnist"))


def _get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, json.loads(r.read())


@pytest.fixture(scope="session")
def ensemble():
    """Starts the ensemble; yields {"aggregator": (url, model), "variant": (url, model), "grpc": {"aggregator":
    (host:port, model), "variant": (host:port, model)}}."""
    bin_dir = Path(os.environ["VP_BIN_DIR"])
    state = Path(tempfile.mkdtemp(prefix="vp-oip-"))
    log = open(state / "vpctl.log", "wb")
    proc = subprocess.Popen(
        [str(bin_dir / "vpctl"), "run", str(MANIFEST), "--port", "0", "--variant-port", "0",
         "--grpc-port", "0", "--variant-grpc-port", "0",
         # A long deadline: this suite checks the protocol, so every answer combines all variants even on a
         # loaded machine (encodings are compared answer for answer).
         "--deadline-ms", "10000", "--state-dir", str(state)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "VP_BIN_DIR": str(bin_dir)},
    )
    try:
        deadline = time.monotonic() + 120
        run = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"vpctl run exited: {(state / 'vpctl.log').read_text()[-2000:]}")
            try:
                run = json.loads((state / "run.json").read_text())
                urls = [run["aggregator"]["url"]] + [v["url"] for v in run["variants"]]
                # Ready everywhere, and the aggregator's prober has seen every variant up: before that, an answer
                # may combine fewer variants (degraded), and the encodings are compared answer for answer.
                if all(_get(u + "/v2/health/ready")[0] == 200 for u in urls):
                    status = _get(run["aggregator"]["url"] + "/v1/status")[1]
                    if len(status["available"]) == len(run["variants"]):
                        break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError("the ensemble did not become ready in 120 s")
        variant = run["variants"][0]
        yield {
            "aggregator": (run["aggregator"]["url"], run["model_name"]),
            "variant": (variant["url"], variant["name"]),
            "grpc": {
                "aggregator": (run["aggregator"]["grpc"], run["model_name"]),
                "variant": (variant["grpc"], variant["name"]),
            },
        }
    finally:
        # vpctl stops its children on SIGTERM; the process group catches anything left.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()


@pytest.fixture(scope="session")
def images():
    """The first 64 test images as uint8 [64, 1, 28, 28] and their labels."""
    with gzip.open(DATA / "t10k-images-idx3-ubyte.gz") as f:
        px = np.frombuffer(f.read(), dtype=np.uint8, offset=16)[: 64 * 784]
    with gzip.open(DATA / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)[:64]
    return px.reshape(64, 1, 28, 28).copy(), labels.astype(np.int64)
