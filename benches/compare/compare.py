"""Variant vs model vs class parallelism on one emulated edge site (scripts/lib/edge-net.sh), with failures.

For each network profile: a site of N devices + a gateway is built; all three schemes are started on it at once
(each device runs its VP variant server(s), its CP sub-model server(s) and its MP stage; the VP and CP aggregators
and the client run on the gateway); then, interleaved scheme by scheme in rounds so that every scheme sees the same
conditions:
  1. latency: the first R test images, one request in flight (p50, p99 per atomic input; bytes on the wire);
  2. throughput: the same images with 8 in flight;
  3. failures (profiles in --failure-profiles): f = 0..N-1 devices dead, cumulatively d0, d1, ...: first by cutting
     the device's link, then (after re-plugging) by SIGKILL of every server process on it; F images each;
     availability = answered / sent, accuracy of the answered.
While one scheme is measured, the other schemes' aggregators are stopped (SIGSTOP), so the bytes counted on the
bridge ports belong to that scheme alone (its own readiness probes included).

    python benches/compare/compare.py run --out results.json [--devices 4] [--profiles fast,lan,iot] ...
    python benches/compare/compare.py cleanup      # remove what a killed run left behind (site and work folder)
    python benches/compare/compare.py calibrate    # Rust variant server vs Python stage server, same model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models" / "vptrain"))
from vptrain import classgroups, data, mpsplit  # noqa: E402

HERE = Path(__file__).resolve().parent
PREFIX = "vpc"
SCHEMES = ("vp", "mp", "cp")
PY = str(ROOT / ".venv" / "bin" / "python")
WORK_PREFIX = "vp-compare-"  # work folders: <tmp>/vp-compare-<pid>-XXXX (servers' logs, kept after a failure)


def remove_stale_work() -> None:
    """Removes the work folders of runs whose process is gone (a killed run cannot remove its own)."""
    for d in Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*-*"):
        pid = d.name[len(WORK_PREFIX):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass


def sh(script: str, check: bool = True) -> str:
    """Runs bash with the edge-net library sourced; returns stdout."""
    full = f"set -euo pipefail; . {ROOT}/scripts/lib/edge-net.sh; {script}"
    res = subprocess.run(["bash", "-c", full], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"bash failed ({res.returncode}): {script}\n{res.stderr}")
    return res.stdout


def pct(values: list[float], q: float) -> float | None:
    return None if not values else round(float(np.percentile(values, q)), 3)


class Site:
    """One emulated site with the three schemes running on it."""

    def __init__(self, args: argparse.Namespace, profile: str, work: Path) -> None:
        self.args, self.profile, self.work = args, profile, work
        self.name = f"{PREFIX}{os.getpid()}"
        self.n = args.devices
        self.pids: dict[tuple[str, str], list[int]] = {}  # (scheme, member) -> pids
        self.aggregators: dict[str, int] = {}
        self.schemes = args.schemes.split(",")

    def addr(self, member: str) -> str:
        return "10.77.0.1" if member == "gw" else f"10.77.0.{10 + int(member[1:])}"

    def spawn(self, scheme: str, member: str, tag: str, cmd: list[str]) -> int:
        log = self.work / f"{self.profile}-{tag}.log"
        quoted = " ".join(f"'{c}'" for c in cmd)
        pid = int(sh(f"edge_spawn {self.name} {member} {log} {quoted}").strip())
        self.pids.setdefault((scheme, member), []).append(pid)
        return pid

    def up(self) -> None:
        sh(f"edge_site_up {self.name} {self.n} {self.profile} {self.args.cpu}")
        for m in ["gw", *[f"d{i}" for i in range(self.n)]]:  # no IPv6 chatter in the byte counts
            sh(f"ip netns exec {self.name}-{m} sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
        self.shaping = sh(f"tc -n {self.name}-d0 qdisc show dev eth0").strip()
        bins = Path(self.args.bin_dir)
        env_ort = os.environ.get("ORT_DYLIB_PATH", "")
        for scheme, manifest, port0, k in (("vp", self.args.vp_manifest, 9101, 3),
                                           ("cp", getattr(self.args, "cp_manifest", None), 9201, 1)):
            if scheme not in self.schemes:
                continue
            man = yaml.safe_load(Path(manifest).read_text())
            entries = []
            for i, v in enumerate(man["variants"]):
                dev = f"d{i % self.n}"
                url = f"{self.addr(dev)}:{port0 + i}"
                self.spawn(scheme, dev, f"{scheme}-{v['name']}",
                           ["env", f"ORT_DYLIB_PATH={env_ort}", str(bins / "vp-variant"), "--manifest",
                            str(manifest), "--variant", v["name"], "--listen", url, "--threads", "1",
                            "--default-k", str(k)])
                entries.append({"name": v["name"], "url": f"http://{url}"})
            cfg = {"schema_version": 1, "manifest": str(manifest), "model_name": scheme, "top_k": k,
                   "deadline_ms": self.args.deadline_ms, "min_variants": 1, "probe_interval_ms": 500,
                   "probe_timeout_ms": 300, "variants": entries}
            cfg_path = self.work / f"{self.profile}-{scheme}-aggregator.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            port = 8081 if scheme == "vp" else 8082
            self.aggregators[scheme] = self.spawn(scheme, "gw", f"{scheme}-aggregator",
                                                  ["env", f"ORT_DYLIB_PATH={env_ort}", str(bins / "vp-aggregator"),
                                                   "--config", str(cfg_path), "--listen", f"127.0.0.1:{port}"])
        stages = json.loads((self.args.mp_dir / "stages.json").read_text())["stages"] if "mp" in self.schemes else []
        for i, st in enumerate(stages):
            cmd = [PY, str(HERE / "stage_server.py"), "--model", str(self.args.mp_dir / st["file"]),
                   "--listen", f"{self.addr(f'd{i}')}:9301"]
            if i + 1 < len(stages):
                cmd += ["--next", f"{self.addr(f'd{i + 1}')}:9301"]
            self.spawn("mp", f"d{i}", f"mp-stage{i}", cmd)
        self.wait_ready()

    def curl(self, url: str) -> str:
        res = subprocess.run(["nsenter", f"--net=/run/netns/{self.name}-gw", "curl", "-sf", "-m", "2", url],
                             capture_output=True, text=True)
        return res.stdout if res.returncode == 0 else ""

    def wait_ready(self, timeout: float = 240.0) -> None:
        """Until both aggregators see every variant and the MP chain answers a request."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = True
            for scheme, port in (("vp", 8081), ("cp", 8082)):
                if scheme not in self.schemes:
                    continue
                status = self.curl(f"http://127.0.0.1:{port}/v1/status")
                try:
                    st = json.loads(status)
                    avail = st.get("available") or st.get("available_variants") or []
                    ok &= len(avail) == len(st.get("variants", [])) and len(avail) > 0
                except json.JSONDecodeError:
                    ok = False
            if ok and ("mp" not in self.schemes
                       or self.measure("mp", [0], 1, timeout_s=5.0, count=False)["answered"] == 1):
                return
            time.sleep(1.0)
        raise RuntimeError(f"site {self.name} ({self.profile}) not ready after {timeout:.0f} s; logs in {self.work}")

    def counters(self) -> dict:
        return json.loads(sh(f"edge_counters {self.name}"))

    def pause_others(self, scheme: str, pause: bool) -> None:
        for s, pid in self.aggregators.items():
            if s != scheme:
                os.kill(pid, signal.SIGSTOP if pause else signal.SIGCONT)

    def measure(self, scheme: str, indices: list[int], concurrency: int, timeout_s: float | None = None,
                count: bool = True) -> dict:
        job = {"scheme": scheme, "images": str(self.args.images), "indices": indices, "concurrency": concurrency,
               "timeout_s": timeout_s or self.args.timeout_s, "k": 3, "model": scheme,
               "target": {"vp": "127.0.0.1:8081", "cp": "127.0.0.1:8082", "mp": "10.77.0.10:9301"}[scheme],
               "listen": "10.77.0.1:9400"}
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=self.work, delete=False) as f:
            json.dump(job, f)
        self.pause_others(scheme, True)
        try:
            before = self.counters() if count else {}
            res = subprocess.run(["nsenter", f"--net=/run/netns/{self.name}-gw", PY, str(HERE / "loadgen.py"),
                                  f.name], capture_output=True, text=True)
            after = self.counters() if count else {}
        finally:
            self.pause_others(scheme, False)
            os.unlink(f.name)
        if res.returncode != 0:
            raise RuntimeError(f"loadgen failed: {res.stderr}")
        rows = json.loads(res.stdout)
        wall = rows[0][1]
        recs = rows[1:]
        labels = self.args.labels
        answered = [r for r in recs if r[2] is not None]
        out = {"sent": len(recs), "answered": len(answered), "wall_s": wall,
               "correct": sum(1 for r in answered if r[2] == int(labels[r[0]])),
               "latencies": [r[1] for r in answered]}
        if count:
            delta = {p: {k: after[p][k] - before[p][k] for k in after[p]} for p in after}
            out["bytes_sent_total"] = sum(d["rx_bytes"] for d in delta.values())  # frames members put on the wire
            out["bytes_per_link"] = {p: d["rx_bytes"] + d["tx_bytes"] for p, d in delta.items()}
            out["packets_total"] = sum(d["rx_packets"] for d in delta.values())
        return out

    def fail(self, member: str, mode: str) -> None:
        if mode == "cut":
            sh(f"edge_link {self.name} {member} down")
        else:
            for (scheme, m), pids in self.pids.items():
                if m == member:
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass

    def replug(self) -> None:
        for i in range(self.n):
            sh(f"edge_link {self.name} d{i} up")
        sh(f"ip -n {self.name}-sw link set br0 up")

    def down(self) -> None:
        sh(f"edge_site_down {self.name}", check=False)


def merge(parts: list[dict]) -> dict:
    """Sums several measure() results of one scheme."""
    out = {"sent": 0, "answered": 0, "correct": 0, "wall_s": 0.0, "latencies": [], "bytes_sent_total": 0,
           "packets_total": 0, "bytes_per_link": {}}
    for p in parts:
        for k in ("sent", "answered", "correct", "wall_s", "bytes_sent_total", "packets_total"):
            out[k] += p.get(k, 0)
        out["latencies"] += p["latencies"]
        for link, b in p.get("bytes_per_link", {}).items():
            out["bytes_per_link"][link] = out["bytes_per_link"].get(link, 0) + b
    return out


def summary(m: dict) -> dict:
    n = max(1, m["sent"])
    dev_links = {k: v for k, v in m["bytes_per_link"].items() if k != "gw"}
    return {
        "sent": m["sent"], "answered": m["answered"], "availability": round(m["answered"] / n, 4),
        "accuracy": round(m["correct"] / m["answered"], 4) if m["answered"] else None,
        "p50_ms": pct(m["latencies"], 50), "p99_ms": pct(m["latencies"], 99),
        "throughput_rps": round(m["answered"] / m["wall_s"], 1) if m["wall_s"] else None,
        "bytes_per_request": round(m["bytes_sent_total"] / n), "packets_per_request": round(m["packets_total"] / n, 1),
        "busiest_device_link_bytes_per_request": round(max(dev_links.values()) / n) if dev_links else None,
    }


def interleaved(site: Site, schemes: list[str], indices: list[int], concurrency: int, rounds: int,
                timeout_s: float | None = None) -> dict:
    chunks = [c.tolist() for c in np.array_split(np.array(indices), rounds) if len(c)]
    parts: dict[str, list[dict]] = {s: [] for s in schemes}
    for r, chunk in enumerate(chunks):
        order = schemes[r % len(schemes):] + schemes[:r % len(schemes)]  # rotate who goes first
        for s in order:
            parts[s].append(site.measure(s, chunk, concurrency, timeout_s))
    return {s: summary(merge(p)) for s, p in parts.items()}


def expected_vp(man: dict, alive: list[str]) -> float | None:
    for row in man["subsets"]:
        if sorted(row["variants"]) == sorted(alive):
            return row["topk_accuracy"][2]  # k = 3, what the aggregator asks
    return None


def prepare(args: argparse.Namespace, work: Path) -> None:
    ds = data.load("fashion-mnist")
    args.labels = ds.test_y
    args.images = work / "test-images.npy"
    np.save(args.images, ds.test_x)
    args.mp_dir = work / f"mp{args.devices}"
    mpsplit.split(Path(args.baseline), args.devices, args.mp_dir)
    fam = yaml.safe_load(Path(args.vp_manifest).read_text())
    args.cp_meta, args.vp_man = {"models": [], "subsets": []}, fam
    if "cp" not in args.schemes.split(","):
        return
    cp_src = Path(args.cp_dir)
    meta = yaml.safe_load((cp_src / "classgroups.yaml").read_text())
    cp_dir = work / "cp"
    cp_dir.mkdir(exist_ok=True)
    for m in meta["models"]:
        (cp_dir / m["file"]).unlink(missing_ok=True)
        (cp_dir / m["file"]).symlink_to((cp_src / m["file"]).resolve())
    (cp_dir / fam["baseline"]["file"]).unlink(missing_ok=True)
    (cp_dir / fam["baseline"]["file"]).symlink_to((Path(args.vp_manifest).parent / fam["baseline"]["file"]).resolve())
    args.cp_manifest = cp_dir / "ensemble.yaml"
    args.cp_manifest.write_text(yaml.safe_dump(classgroups.ensemble_manifest(meta, fam["baseline"], fam["input"]),
                                               sort_keys=False))
    args.cp_meta, args.vp_man = meta, fam


def run(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-"))
    sh(f"edge_cleanup_stale {PREFIX}")
    prepare(args, work)
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "devices": args.devices, "cpu_per_device": args.cpu,
        "requests": args.requests, "failure_requests": args.failure_requests, "timeout_s": args.timeout_s, "failure_timeout_s": args.failure_timeout_s,
        "failure_concurrency": args.failure_concurrency,
        "deadline_ms": args.deadline_ms, "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{os.cpu_count()} CPUs, {open('/proc/cpuinfo').read().count('processor')} processors, "
                   f"kernel {os.uname().release}",
        "mp_stages": json.loads((args.mp_dir / "stages.json").read_text()),
        "profiles": {}, "failures": {}}
    indices = list(range(args.requests))
    fail_idx = list(range(args.failure_requests))
    site: Site | None = None

    def stop(signum, _frame):
        if site is not None:
            site.down()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    schemes = [s for s in SCHEMES if s in args.schemes.split(",")]
    try:
        for profile in args.profiles.split(","):
            site = Site(args, profile, work)
            t0 = time.monotonic()
            site.up()
            print(f"[{profile}] site up in {time.monotonic() - t0:.0f}s: {site.shaping}", flush=True)
            prof = {"shaping": site.shaping}
            prof["c1"] = interleaved(site, schemes, indices, 1, args.rounds)
            print(f"[{profile}] c=1 {json.dumps(prof['c1'])}", flush=True)
            prof["c8"] = interleaved(site, schemes, indices, 8, args.rounds)
            print(f"[{profile}] c=8 {json.dumps(prof['c8'])}", flush=True)
            results["profiles"][profile] = prof
            if profile in args.failure_profiles.split(","):
                results["failures"][profile] = failures(site, schemes, fail_idx, args)
            site.down()
            site = None
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")  # partial results survive a crash
    finally:
        if site is not None:
            site.down()
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_s"] = round(time.monotonic() - t_start, 1)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} in {results['wall_s']} s", flush=True)
    shutil.rmtree(work, ignore_errors=True)  # on failure it stays, with the servers' logs
    return 0


def failures(site: Site, schemes: list[str], idx: list[int], args: argparse.Namespace) -> dict:
    out: dict = {}
    vp_names = [v["name"] for v in args.vp_man["variants"]]
    cp_names = [m["name"] for m in args.cp_meta["models"]]
    cp_rows = {tuple(sorted(r["groups"])): r["accuracy"] for r in args.cp_meta["subsets"]}
    modes = args.failure_modes.split(",")
    for mode in modes:
        # The throughput phases before can leave variants ejected for a while (the aggregators' outlier
        # ejection after timeouts under load); the failure schedule starts from a whole site.
        site.wait_ready()
        rows: dict[str, list] = {s: [] for s in schemes}
        for f in range(args.devices):
            if f > 0:
                site.fail(f"d{f - 1}", mode)
                time.sleep(args.settle_s)
            res = interleaved(site, schemes, idx, args.failure_concurrency, 1, args.failure_timeout_s)
            dead = {f"d{i}" for i in range(f)}
            alive_vp = [v for i, v in enumerate(vp_names) if f"d{i % args.devices}" not in dead]
            alive_cp = [c for i, c in enumerate(cp_names) if f"d{i % args.devices}" not in dead]
            expect = {"vp": expected_vp(args.vp_man, alive_vp) if alive_vp else None,
                      "cp": cp_rows.get(tuple(sorted(alive_cp))) if alive_cp else None,
                      "mp": args.vp_man["baseline"]["accuracy"] if f == 0 else None}
            for s in schemes:
                rows[s].append({"dead": f, **{k: res[s][k] for k in ("sent", "answered", "availability", "accuracy",
                                                                      "p50_ms", "p99_ms")},
                                "expected_accuracy_full_test_set": expect[s]})
            print(f"[{site.profile}] {mode} f={f} " + " ".join(
                f"{s}: {res[s]['availability']}/{res[s]['accuracy']}" for s in schemes), flush=True)
        out[mode] = rows
        if mode == "cut" and "kill" in modes:
            site.replug()
            site.wait_ready()
    return out


def calibrate(args: argparse.Namespace) -> int:
    """The servers' own cost, apart from the schemes: the whole baseline behind the Rust variant server and behind
    the Python stage server (one stage), on loopback, no CPU quota, 1 request in flight, alternating blocks."""
    work = Path(tempfile.mkdtemp(prefix="vp-calibrate-"))
    ds = data.load("fashion-mnist")
    images = work / "test-images.npy"
    np.save(images, ds.test_x)
    env = {**os.environ}
    procs = [
        subprocess.Popen([str(Path(args.bin_dir) / "vp-variant"), "--manifest", args.vp_manifest, "--variant",
                          "baseline", "--listen", "127.0.0.1:9391", "--threads", "1"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([PY, str(HERE / "stage_server.py"), "--model", args.baseline, "--listen", "127.0.0.1:9392"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(3)
        lat: dict[str, list[float]] = {"rust vp-variant": [], "python stage server": []}
        for block in range(args.blocks):
            for name, scheme, target in (("rust vp-variant", "vp", "127.0.0.1:9391"),
                                         ("python stage server", "mp", "127.0.0.1:9392")):
                job = {"scheme": scheme, "images": str(images), "indices": list(range(block * 100, block * 100 + 100)),
                       "concurrency": 1, "timeout_s": 5, "k": 3, "model": "baseline", "target": target,
                       "listen": "127.0.0.1:9393"}
                (work / "job.json").write_text(json.dumps(job))
                out = subprocess.run([PY, str(HERE / "loadgen.py"), str(work / "job.json")], capture_output=True,
                                     text=True, check=True)
                lat[name] += [r[1] for r in json.loads(out.stdout)[1:] if r[1] is not None]
        print(json.dumps({k: {"n": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for k, v in lat.items()}))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--devices", type=int, default=4)
    r.add_argument("--profiles", default="fast,lan,iot")
    r.add_argument("--failure-profiles", default="lan,iot")
    r.add_argument("--failure-modes", default="cut,kill")
    r.add_argument("--schemes", default="vp,mp,cp")
    r.add_argument("--requests", type=int, default=1000, help="test images for the latency/throughput phases")
    r.add_argument("--failure-requests", type=int, default=500, help="test images per failure step")
    r.add_argument("--failure-concurrency", type=int, default=16)
    r.add_argument("--failure-timeout-s", type=float, default=2.0)
    r.add_argument("--rounds", type=int, default=4, help="interleaving rounds per phase")
    r.add_argument("--cpu", default="0.25", help="CPU quota per device, cores ('none': no quota)")
    r.add_argument("--timeout-s", type=float, default=2.0)
    r.add_argument("--deadline-ms", type=int, default=1000)
    r.add_argument("--settle-s", type=float, default=1.0)
    r.add_argument("--bin-dir", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    r.add_argument("--vp-manifest", default=str(ROOT / "models" / "fmnist" / "ensemble.yaml"))
    r.add_argument("--baseline", default=str(ROOT / "models" / "fmnist" / "baseline.onnx"))
    r.add_argument("--cp-dir", default=str(ROOT / "models" / "fmnist-cp"))
    sub.add_parser("cleanup")
    c = sub.add_parser("calibrate")
    c.add_argument("--blocks", type=int, default=5)
    c.add_argument("--bin-dir", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    c.add_argument("--vp-manifest", default=str(ROOT / "models" / "fmnist" / "ensemble.yaml"))
    c.add_argument("--baseline", default=str(ROOT / "models" / "fmnist" / "baseline.onnx"))
    args = ap.parse_args()
    if args.cmd == "calibrate":
        return calibrate(args)
    if args.cmd == "cleanup":
        sh(f"edge_cleanup_stale {PREFIX}")
        remove_stale_work()
        return 0
    if not 2 <= args.devices <= 8:
        print("compare: --devices must be 2..8", file=sys.stderr)
        return 2
    try:
        return run(args)
    except (RuntimeError, OSError, ValueError) as e:
        print(f"compare: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
