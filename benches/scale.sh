#!/usr/bin/env bash
# Scale benchmark: N ensembles (default 200) of 5 variants each on M simulated nodes (default 100) in the test
# control plane; reports the time until every ensemble is Ready, the reconcile latency p50/p99 (from the
# operator's own histogram), reconciles and applies run, and the operator's peak resident memory. Then it kills
# KILL nodes at once (default 10) and reports the time until every ensemble is whole and Ready again.
#   benches/scale.sh [ENSEMBLES] [NODES] [KILL]      prints one JSON line
# VP_OPERATOR_BIN runs another operator binary (e.g. an older build, as a baseline); default: a release build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh || true
ensembles=${1:-200}
nodes=${2:-100}
kill_nodes=${3:-10}
bin=${VP_CONTROLPLANE_BIN:-$VP_CACHE/bin/vp-controlplane}
[ -x "$bin" ] || { echo "scale bench: $bin missing (run scripts/setup.sh)" >&2; exit 1; }
if [ -n "${VP_OPERATOR_BIN:-}" ]; then
  op=$VP_OPERATOR_BIN
else
  cargo build --quiet --locked --release -p vp-operator
  op="$CARGO_TARGET_DIR/release/vp-operator"
fi
work=$(mktemp -d)
cp_pid=""; op_pid=""
cleanup() {
  cp "$work/operator.log" "${TMPDIR:-/tmp}/vp-scale-operator.log" 2>/dev/null || true
  [ -n "$op_pid" ] && kill "$op_pid" 2>/dev/null || true
  [ -n "$cp_pid" ] && kill -TERM -- "-$cp_pid" 2>/dev/null || true
  sleep 1; rm -rf "$work"
}
trap cleanup EXIT
setsid "$bin" up --data-dir "$work/data" --nodes 0 >"$work/cp.log" 2>&1 </dev/null &
cp_pid=$!
for _ in $(seq 1 600); do [ -f "$work/data/state.json" ] && break; sleep 0.2; done
export KUBECONFIG="$work/data/kubeconfig"
for i in $(seq 1 "$nodes"); do
  "$bin" node --data-dir "$work/data" add "edge-$i" --label role=edge --cpu $(( 2 + i % 3 * 2 )) --memory 8Gi --pods 110 >/dev/null
done
kubectl apply -f crds/ >/dev/null
until kubectl get crd variantensembles.vp.dev -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null | grep -q True; do sleep 0.2; done
kubectl create ns scale >/dev/null
# A valid 5-variant manifest with every subset row (accuracies are made up: only the shape matters here).
python3 - "$work/manifest.yaml" <<'PY'
import itertools, sys
names = [f"v{i}" for i in range(5)]
rows = []
for r in range(1, 6):
    for sub in itertools.combinations(names, r):
        a = round(0.85 + 0.01 * len(sub), 4)
        rows.append(f"  - {{variants: [{', '.join(sub)}], accuracy: {a}, topk_accuracy: [{a}, {a}, {a}, {a}, {a}]}}")
entry = lambda n, i: f"{{name: {n}, file: {n}.onnx, sha256: \"{str(i) * 64}\", bytes: 1, resolution: 28, width: 0.5, head_channels: 320, params: 1, macs: {1000 * (i + 1)}, accuracy: 0.85}}"
vs = "\n".join(f"  - {entry(n, i)}" for i, n in enumerate(names))
head = ("schema_version: 1\nfamily: bench\n"
        "dataset: {name: bench, classes: [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9], test_samples: 1}\n"
        "input: {name: image, dtype: uint8, layout: NCHW, shape: [1, 28, 28]}\n"
        "output: {name: probs, dtype: float32, classes: 10}\n")
open(sys.argv[1], "w").write(head + f"variants:\n{vs}\nbaseline: {entry('baseline', 9)}\nsubsets:\n" + "\n".join(rows) + "\n")
PY
kubectl -n scale create configmap manifest --from-file=ensemble.yaml="$work/manifest.yaml" >/dev/null
"$op" --listen 127.0.0.1:18099 --log-format json --variant-resources '{"requests":{"cpu":"100m","memory":"64Mi"}}' >"$work/operator.log" 2>&1 &
op_pid=$!
for _ in $(seq 1 100); do curl -sf 127.0.0.1:18099/readyz >/dev/null && break; sleep 0.2; done
for e in $(seq 1 "$ensembles"); do
  cat <<YAML
---
apiVersion: vp.dev/v1alpha1
kind: VariantEnsemble
metadata: {name: e$e, namespace: scale}
spec:
  model: {manifest: {configMap: manifest}, classes: 10}
  topK: 3
  aggregator: {replicas: 1}
  variants: [{name: v0, source: {hostPath: /var/lib/vp/v0.onnx}}, {name: v1, source: {hostPath: /var/lib/vp/v1.onnx}}, {name: v2, source: {hostPath: /var/lib/vp/v2.onnx}}, {name: v3, source: {hostPath: /var/lib/vp/v3.onnx}}, {name: v4, source: {hostPath: /var/lib/vp/v4.onnx}}]
YAML
done >"$work/ensembles.yaml"
# whole: ensembles Ready at their generation with every variant serving; on_dead: variant or aggregator pods
# still bound to one of the nodes named in $work/dead (none before the kill).
touch "$work/dead"
count() {
  kubectl get pods -n scale -o json >"$work/pods.json"
  kubectl -n scale get ve -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
whole = sum(1 for i in items
            if any(c["type"] == "Ready" and c["status"] == "True" for c in (i.get("status") or {}).get("conditions", []))
            and (i.get("status") or {}).get("observedGeneration") == i["metadata"]["generation"]
            and (i.get("status") or {}).get("availableVariants") == (i.get("status") or {}).get("desiredVariants"))
dead = set(open(sys.argv[1]).read().split())
pods = json.load(open(sys.argv[2]))["items"]
on_dead = sum(1 for p in pods if p["spec"].get("nodeName") in dead)
print(whole, on_dead)' "$work/dead" "$work/pods.json"
}
peak=0
# Waits (at most 20 minutes) until every ensemble is whole; sets elapsed (seconds until then) and left (pods
# still bound to a dead node 30 s later: the operator removes them; Kubernetes alone leaves evicted pods of an
# unreachable node Terminating indefinitely).
elapsed= left=
converge() {
  local t0=$1 deadline=$(( $(date +%s) + 1200 )) whole on_dead since=
  while [ "$(date +%s)" -lt "$deadline" ]; do
    kill -0 "$op_pid" 2>/dev/null || { echo "scale bench: the operator exited; log: ${TMPDIR:-/tmp}/vp-scale-operator.log" >&2; exit 1; }
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$op_pid/status")
    [ "$rss" -gt "$peak" ] && peak=$rss
    read -r whole on_dead < <(count)
    if [ "$whole" -eq "$ensembles" ]; then
      if [ -z "$since" ]; then
        elapsed=$(echo "$(date +%s.%N) - $t0" | bc)
        since=$(date +%s)
      fi
      if [ "$on_dead" -eq 0 ] || [ $(( $(date +%s) - since )) -ge 30 ]; then
        left=$on_dead
        return 0
      fi
    else
      since=
    fi
    sleep 1
  done
  echo "scale bench: not converged after 20 minutes ($whole of $ensembles whole, $on_dead pods on dead nodes)" >&2
  exit 1
}
t0=$(date +%s.%N)
kubectl apply -f "$work/ensembles.yaml" >/dev/null
converge "$t0"
converge_s=$elapsed
curl -s 127.0.0.1:18099/metrics >"$work/metrics-converged.txt"
peak_converge=$peak

# Failure phase: KILL nodes lose power at once; every variant and aggregator pod on them must be replaced.
kill_s=null moved=0 left_on_dead=0
if [ "$kill_nodes" -gt 0 ]; then
  kubectl get pods -n scale -o json >"$work/pods.json"
  for i in $(seq 1 "$kill_nodes"); do echo "edge-$i"; done >"$work/dead"
  moved=$(python3 -c '
import json, sys
dead = set(open(sys.argv[1]).read().split())
print(sum(1 for p in json.load(open(sys.argv[2]))["items"] if p["spec"].get("nodeName") in dead))' "$work/dead" "$work/pods.json")
  tk=$(date +%s.%N)
  for n in $(cat "$work/dead"); do "$bin" node --data-dir "$work/data" kill "$n" >/dev/null; done
  converge "$tk"
  kill_s=$elapsed
  left_on_dead=$left
fi
curl -s 127.0.0.1:18099/metrics >"$work/metrics.txt"
python3 - "$work/metrics-converged.txt" "$work/metrics.txt" "$ensembles" "$nodes" "$converge_s" "$peak_converge" "$peak" "$kill_nodes" "$kill_s" "$moved" "$left_on_dead" <<'PY'
import json, sys
conv_path, path, ens, nodes, conv_s, peak_conv, peak, kill_n, kill_s, moved, left = sys.argv[1:]
def parse(path):
    buckets, count, total, counters, failover = [], 0.0, 0.0, {}, {}
    for line in open(path):
        if line.startswith("vp_operator_reconcile_duration_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
        elif line.startswith("vp_operator_reconcile_duration_seconds_count"):
            count = float(line.split()[-1])
        elif line.startswith("vp_operator_reconcile_duration_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("vp_operator_failover_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            le = float("inf") if le == "+Inf" else float(le)
            failover[le] = failover.get(le, 0.0) + float(line.split()[-1])
        elif line.startswith(("vp_operator_applies_total", "vp_operator_reschedules_total", "vp_operator_reconcile_errors_total", "vp_operator_failover_seconds_count")):
            name, value = line.rsplit(" ", 1)
            counters[name] = int(float(value))
    def q(p, buckets, count):
        for le, c in buckets:
            if count and c >= p * count:
                return "+Inf" if le == float("inf") else le
    fo = sorted(failover.items())
    fo_n = fo[-1][1] if fo else 0
    return {"reconciles": int(count), "reconcile_mean_s": round(total / count, 4) if count else None,
            "reconcile_p50_le_s": q(0.5, buckets, count), "reconcile_p99_le_s": q(0.99, buckets, count),
            "failover_p50_le_s": q(0.5, fo, fo_n), "failover_max_le_s": q(1.0, fo, fo_n), "counters": counters}
print(json.dumps({"ensembles": int(ens), "variants_each": 5, "nodes": int(nodes),
                  "converge_s": round(float(conv_s), 1), "converge": parse(conv_path),
                  "operator_peak_rss_mib_converge": round(int(peak_conv) / 1024, 1),
                  "killed_nodes": int(kill_n), "pods_on_killed_nodes": int(moved),
                  "recover_s": None if kill_s == "null" else round(float(kill_s), 1),
                  "pods_left_on_killed_nodes": int(left),
                  "total": parse(path), "operator_peak_rss_mib": round(int(peak) / 1024, 1)}))
PY
