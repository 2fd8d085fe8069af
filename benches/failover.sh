#!/usr/bin/env bash
# Failover benchmark: how long from a node's last heartbeat until its variant serves again elsewhere, with the
# operator (VariantEnsemble, default 20 s grace) and without it (a one-replica Deployment on the same node,
# left to default Kubernetes: node monitor grace, then taint-based eviction after the 300 s toleration).
# Both run in the same test control plane (scripts/setup-controlplane.sh builds it), on the same killed node.
#   benches/failover.sh            prints one result line per run as JSON; takes ~7 minutes (the baseline)
# Needs: vp-controlplane (VP_CONTROLPLANE_BIN or $VP_CACHE/bin), kubectl, jq is not needed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh || true
bin=${VP_CONTROLPLANE_BIN:-$VP_CACHE/bin/vp-controlplane}
[ -x "$bin" ] || { echo "failover bench: $bin missing (run scripts/setup.sh)" >&2; exit 1; }
cargo build --quiet --locked -p vp-operator -p vp-api
op="$CARGO_TARGET_DIR/debug/vp-operator"
work=$(mktemp -d)
cp_pid=""; op_pid=""
cleanup() {
  [ -n "$op_pid" ] && kill "$op_pid" 2>/dev/null || true
  [ -n "$cp_pid" ] && kill -TERM -- "-$cp_pid" 2>/dev/null || true
  sleep 1; rm -rf "$work"
}
trap cleanup EXIT
setsid "$bin" up --data-dir "$work/data" --nodes 0 >"$work/cp.log" 2>&1 </dev/null &
cp_pid=$!
for _ in $(seq 1 600); do [ -f "$work/data/state.json" ] && break; sleep 0.2; done
export KUBECONFIG="$work/data/kubeconfig"
node() { "$bin" node --data-dir "$work/data" "$@" >/dev/null; }
for n in edge-a:4 edge-b:2 edge-c:2 spare:1; do node add "${n%%:*}" --label role=edge --label bench=yes --cpu "${n##*:}" --memory 4Gi; done
kubectl apply -f crds/ >/dev/null
kubectl create ns bench >/dev/null
kubectl -n bench create configmap fmnist-manifest --from-file=ensemble.yaml=crates/vp-operator/fixtures/manifest.yaml >/dev/null
until kubectl get crd variantensembles.vp.dev -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null | grep -q True; do sleep 0.2; done
"$op" --listen 127.0.0.1:0 --log-format json >"$work/operator.log" 2>&1 &
op_pid=$!
cat <<YAML | kubectl apply -f - >/dev/null
apiVersion: vp.dev/v1alpha1
kind: VariantEnsemble
metadata: {name: fm, namespace: bench}
spec:
  model: {manifest: {configMap: fmnist-manifest}, classes: 10}
  topK: 3
  variants:
    - {name: v0, source: {hostPath: /var/lib/vp/v0.onnx}}
    - {name: v1, source: {hostPath: /var/lib/vp/v1.onnx}}
    - {name: v2, source: {hostPath: /var/lib/vp/v2.onnx}}
  placement: {nodeSelector: {role: edge}}
YAML
kubectl -n bench wait ve/fm --for=condition=Ready --timeout=120s >/dev/null
victim=$(kubectl -n bench get ve fm -o jsonpath='{.status.variants[?(@.name=="v2")].node}')
# Baseline: a plain Deployment whose pod prefers the victim node (so both lose their pod to the same failure).
cat <<YAML | kubectl apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: baseline, namespace: bench}
spec:
  replicas: 1
  selector: {matchLabels: {app: baseline}}
  template:
    metadata: {labels: {app: baseline}}
    spec:
      nodeSelector: {bench: "yes"}
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - {weight: 100, preference: {matchFields: [{key: metadata.name, operator: In, values: [$victim]}]}}
      containers: [{name: c, image: example/baseline:1}]
YAML
kubectl -n bench rollout status deploy/baseline --timeout=120s >/dev/null
base_node=$(kubectl -n bench get pods -l app=baseline -o jsonpath='{.items[0].spec.nodeName}')
[ "$base_node" = "$victim" ] || { echo "failover bench: baseline pod landed on $base_node, not $victim" >&2; exit 1; }
# Kill the node right after a renewal, so the measured silence starts at a known heartbeat.
renew0=$(kubectl -n kube-node-lease get lease "$victim" -o jsonpath='{.spec.renewTime}')
while [ "$(kubectl -n kube-node-lease get lease "$victim" -o jsonpath='{.spec.renewTime}')" = "$renew0" ]; do sleep 0.1; done
node kill "$victim"
last=$(kubectl -n kube-node-lease get lease "$victim" -o jsonpath='{.spec.renewTime}')
t_last=$(date -d "$last" +%s.%N)
t_op=""; t_base=""
deadline=$(( $(date +%s) + 600 ))
while [ -z "$t_base" ] && [ "$(date +%s)" -lt "$deadline" ]; do
  now=$(date +%s.%N)
  if [ -z "$t_op" ]; then
    s=$(kubectl -n bench get ve fm -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.variants[?(@.name=="v2")].node} {.status.variants[?(@.name=="v2")].ready}')
    read -r ready node vready <<<"$s"
    [ "$ready" = True ] && [ "$node" != "$victim" ] && [ "$vready" = true ] && t_op=$now
  fi
  b=$(kubectl -n bench get pods -l app=baseline -o jsonpath='{range .items[*]}{.spec.nodeName}={.status.conditions[?(@.type=="Ready")].status}{" "}{end}')
  for p in $b; do [ "${p%%=*}" != "$victim" ] && [ "${p#*=}" = True ] && t_base=$now; done
  sleep 0.5
done
detect=$(grep -o '"message":"node failed"[^}]*"node":"'"$victim"'"' "$work/operator.log" | head -1 || true)
fmt() { [ -n "$1" ] && echo "$1 - $t_last" | bc || echo null; }
echo "{\"victim\":\"$victim\",\"grace_s\":20,\"operator_restored_s\":$(fmt "$t_op"),\"default_kubernetes_restored_s\":$(fmt "$t_base")}"
grep -o '"timestamp":"[^"]*","level":"WARN","message":"node failed"' "$work/operator.log" | head -1 >&2 || true
