#!/usr/bin/env bash
# Smoke test of the scheme comparison (benches/compare): the whole harness in its smallest form -- 2 devices on the
# unshaped ("fast") emulated site, variant, model and class parallelism, 200 requests each, then one device's
# servers SIGKILLed -- and its clean-up: after a normal run and after the harness itself is SIGKILLed mid-run, no
# network namespace, veth, qdisc or cgroup of the site is left, nor the killed run's work folder. Needs root
# (network namespaces, cgroups).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
[ -x .venv/bin/python ] || scripts/setup-python.sh >/dev/null
# VP_COMPARE_BIN_DIR: use vp-variant and vp-aggregator from there instead of building the debug ones.
bins=${VP_COMPARE_BIN_DIR:-}
if [ -z "$bins" ]; then
  cargo build --quiet --locked -p vp-variant -p vp-aggregator
  bins="$CARGO_TARGET_DIR/debug"
fi
py=.venv/bin/python
out=$(mktemp -d)
trap 'rm -rf "$out"; $py benches/compare/compare.py cleanup >/dev/null 2>&1 || true' EXIT

leftovers() {
  # Namespaces and cgroups of any comparison site; veths and qdiscs live only inside those namespaces.
  { ip netns list | grep -E '^vpc[0-9]+-' || true
    ls -d /sys/fs/cgroup/*/vp-edge 2>/dev/null || true
    ip -o link show type veth | grep -E ': (gw|d[0-9]+)@' || true; }
}

echo "compare: smoke run (2 devices, fast profile, 200 requests, SIGKILL of d0)"
start=$(date +%s)
$py benches/compare/compare.py run --out "$out/r.json" --devices 2 --profiles fast --failure-profiles fast \
  --failure-modes kill --requests 200 --failure-requests 200 --rounds 2 --bin-dir "$bins"
echo "compare: smoke run took $(( $(date +%s) - start )) s"
$py - "$out/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
fails = []
def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)
prof = r["profiles"]["fast"]
for phase in ("c1", "c8"):
    for s in ("vp", "mp", "cp"):
        m = prof[phase][s]
        check(m["sent"] == 200 and m["answered"] == 200, f"{phase} {s}: 200 of 200 answered ({m['answered']})")
        check(m["p50_ms"] is not None and 0 < m["p50_ms"] <= m["p99_ms"], f"{phase} {s}: 0 < p50 <= p99")
        check(m["bytes_per_request"] > 0 and m["packets_per_request"] > 0, f"{phase} {s}: bytes counted")
        check(0.5 <= m["accuracy"] <= 1.0, f"{phase} {s}: accuracy {m['accuracy']} plausible")
rows = r["failures"]["fast"]["kill"]
for s in ("vp", "mp", "cp"):
    check([x["dead"] for x in rows[s]] == [0, 1], f"{s}: rows for 0 and 1 dead devices")
    # >= 0.95, not 1.0: at 16 in flight on a saturated 2-core machine a request can exceed the 2 s timeout.
    check(rows[s][0]["availability"] >= 0.95, f"{s}: answers with no device dead ({rows[s][0]['availability']})")
check(rows["mp"][1]["availability"] == 0.0, "mp: nothing answered with one stage dead")
check(rows["vp"][1]["availability"] >= 0.95, f"vp: keeps answering with d0 dead ({rows['vp'][1]['availability']})")
check(rows["vp"][1]["accuracy"] >= 0.7, f"vp: accuracy with d0 dead {rows['vp'][1]['accuracy']}")
check(rows["cp"][1]["accuracy"] is not None and rows["cp"][1]["accuracy"] <= 0.6,
      f"cp: loses the dead group's classes (accuracy {rows['cp'][1]['accuracy']})")
sys.exit(1 if fails else 0)
PY
left=$(leftovers)
[ -z "$left" ] || { echo "compare: FAIL: left behind after a normal run:"; echo "$left"; exit 1; }
echo "ok   nothing left after a normal run"

echo "compare: SIGKILL of the harness while its site is up, then cleanup"
$py benches/compare/compare.py run --out "$out/killed.json" --devices 2 --profiles fast --failure-profiles none \
  --requests 10000 --bin-dir "$bins" >"$out/killed.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q "site up" "$out/killed.log" && break; sleep 0.5; done
grep -q "site up" "$out/killed.log" || { echo "compare: FAIL: site did not come up"; cat "$out/killed.log"; exit 1; }
sleep 2
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
[ -n "$(leftovers)" ] || { echo "compare: FAIL: expected a live site to clean up"; exit 1; }
$py benches/compare/compare.py cleanup
left=$(leftovers; ls -d "${TMPDIR:-/tmp}/vp-compare-$pid-"* 2>/dev/null || true)
[ -z "$left" ] || { echo "compare: FAIL: left behind after kill -9 and cleanup:"; echo "$left"; exit 1; }
echo "ok   nothing left after kill -9 and cleanup"
echo "compare: smoke test passed"
