#!/usr/bin/env bash
# Failover on real nodes (scripts/site.sh): a node holding one variant of the fmnist example loses power; how
# long until the ensemble is whole again, broken down into detection (the operator's node failure Event),
# reschedule (the replacement pod exists), container start (the init container that downloads and verifies the
# model, then the variant container running), model load and readiness (the pod Ready: ONNX Runtime session
# built, digest checked, readiness probe passed) and the aggregator using it (the ensemble's availableVariants
# whole again). Against default Kubernetes in the same run and on the same lost node: a one-replica Deployment
# of the same variant image (default tolerations: 300 s), timed to its replacement pod Ready.
#   benches/failover-nodes.sh [--no-baseline]     prints the timeline and one JSON line; ~8 min with the
#                                                 baseline (its 50 s + 300 s wait), ~2 min without
# Needs root and what scripts/test-e2e.sh needs (scripts/setup.sh, scripts/build-images.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh || true
baseline=1
[ "${1:-}" = "--no-baseline" ] && baseline=0
export VP_SITE=${VP_SITE:-vpbench}
export VP_SITE_DIR=${VP_SITE_DIR:-$VP_CACHE/site-bench}
work=$(mktemp -d)
cleanup() { scripts/site.sh down >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
k() { scripts/site.sh run kubectl "$@"; }
say() { echo "failover-nodes: $*" >&2; }
ns=vp-examples

scripts/build-images.sh >/dev/null
scripts/site.sh down >/dev/null 2>&1 || true
scripts/site.sh up --nodes 4 >/dev/null
for n in n1 n2 n3 n4; do k label node "$n" node-role.kubernetes.io/edge= >/dev/null; done
scripts/site.sh run python3 -m http.server --bind 10.77.0.2 8000 --directory "$root/models/fmnist" >/dev/null 2>&1 &
mkdir -p "$work/example"
for f in manifests/examples/fmnist/*.yaml; do
  sed 's#https://models.example.com/variant-parallel/fmnist#http://10.77.0.2:8000#' "$f" >"$work/example/$(basename "$f")"
done
scripts/site.sh run helm install vp-operator charts/vp-operator -n vp-system --create-namespace --wait --timeout 5m \
  --set image.repository=localhost/vp-operator --set image.tag=site --set image.pullPolicy=Never \
  --set operator.variantImage=localhost/vp-variant:site --set operator.aggregatorImage=localhost/vp-aggregator:site \
  --set operator.fetchImage=localhost/vp-fetch:site >/dev/null
k apply --server-side -f "$work/example/" >/dev/null
k -n "$ns" wait ve/fmnist --for=condition=Ready --timeout=300s >/dev/null
# The victim: a variant whose node holds neither the aggregator nor the operator (one replica each).
busy=$(k get pods -A -l app.kubernetes.io/component=aggregator -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}'
  k -n vp-system get pods -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}')
victim= victim_node=
while read -r v n; do
  if ! grep -qx "$n" <<<"$busy"; then victim=$v victim_node=$n; break; fi
done < <(k -n "$ns" get pods -l app.kubernetes.io/component=variant \
  -o jsonpath='{range .items[*]}{.metadata.labels.vp\.dev/variant}{" "}{.spec.nodeName}{"\n"}{end}' | sort)
[ -n "$victim" ] || { say "every variant shares a node with the aggregator or the operator; run again"; exit 1; }
if [ "$baseline" = 1 ]; then
  # The same variant as a plain Deployment, preferring the victim's node (so it runs there) without requiring it.
  k -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: baseline}
spec:
  replicas: 1
  selector: {matchLabels: {app: baseline}}
  template:
    metadata: {labels: {app: baseline}}
    spec:
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - {weight: 100, preference: {matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$victim_node]}]}}
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
      volumes:
        - {name: manifest, configMap: {name: fmnist-manifest, items: [{key: ensemble.yaml, path: ensemble.yaml}]}}
        - {name: model, configMap: {name: fmnist-models, items: [{key: w035-r16.onnx, path: w035-r16.onnx}]}}
      containers:
        - name: variant
          image: localhost/vp-variant:site
          args: [--manifest, /models/ensemble.yaml, --variant, w035-r16, --listen, "0.0.0.0:8080"]
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /v2/health/ready, port: http}, periodSeconds: 2, failureThreshold: 1}
          volumeMounts:
            - {name: manifest, mountPath: /models/ensemble.yaml, subPath: ensemble.yaml, readOnly: true}
            - {name: model, mountPath: /models/w035-r16.onnx, subPath: w035-r16.onnx, readOnly: true}
          securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
EOF
  k -n "$ns" rollout status deploy/baseline --timeout=120s >/dev/null
  base_node=$(k -n "$ns" get pods -l app=baseline -o jsonpath='{.items[0].spec.nodeName}')
  [ "$base_node" = "$victim_node" ] || { say "the baseline pod landed on $base_node, not $victim_node; run again"; exit 1; }
fi

now() { date +%s.%N; }
t0=$(now)
scripts/site.sh node off "$victim_node"
say "powered off $victim_node at $(date -u +%T)"
declare -A seen=()
mark() { [ -n "${seen[$1]:-}" ] || { seen[$1]=$(echo "$(now) - $t0" | bc); say "$(printf '%-22s %7.1f s' "$1" "${seen[$1]}")"; }; }
deadline=$(( $(date +%s) + (baseline == 1 ? 600 : 180) ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  k -n "$ns" get pods,ve,events -o json >"$work/state.json" 2>/dev/null || continue
  jq -e --arg n "$victim_node" '.items[] | select(.kind == "Event" and .involvedObject.kind == "VariantEnsemble")
    | select((.message // "") | contains($n))' "$work/state.json" >/dev/null && mark detection
  new='.items[] | select(.kind == "Pod" and .metadata.labels["vp.dev/variant"] == $v and .spec.nodeName != $n)'
  jq -e --arg v "$victim" --arg n "$victim_node" "$new" "$work/state.json" >/dev/null && mark reschedule
  jq -e --arg v "$victim" --arg n "$victim_node" "$new | .status.initContainerStatuses[]? | select(.state.running or .state.terminated)" "$work/state.json" >/dev/null && mark fetch-started
  jq -e --arg v "$victim" --arg n "$victim_node" "$new | .status.containerStatuses[]? | select(.name == \"variant\" and .state.running)" "$work/state.json" >/dev/null && mark container-running
  jq -e --arg v "$victim" --arg n "$victim_node" "$new | .status.conditions[]? | select(.type == \"Ready\" and .status == \"True\")" "$work/state.json" >/dev/null && mark pod-ready
  jq -e '.items[] | select(.kind == "VariantEnsemble") | select(.status.availableVariants == .status.desiredVariants and .status.availableVariants > 0)' "$work/state.json" >/dev/null \
    && [ -n "${seen[pod-ready]:-}" ] && mark ensemble-whole
  if [ "$baseline" = 1 ]; then
    jq -e --arg n "$victim_node" '.items[] | select(.kind == "Pod" and .metadata.labels.app == "baseline" and .spec.nodeName == $n and .metadata.deletionTimestamp)' "$work/state.json" >/dev/null && mark baseline-evicted
    jq -e --arg n "$victim_node" '.items[] | select(.kind == "Pod" and .metadata.labels.app == "baseline" and .spec.nodeName != $n and .spec.nodeName != null) | .status.conditions[]? | select(.type == "Ready" and .status == "True")' "$work/state.json" >/dev/null && mark baseline-ready
    [ -n "${seen[ensemble-whole]:-}" ] && [ -n "${seen[baseline-ready]:-}" ] && break
  else
    [ -n "${seen[ensemble-whole]:-}" ] && break
  fi
  sleep 0.3
done
[ -n "${seen[ensemble-whole]:-}" ] || { say "the ensemble was not whole again in time"; exit 1; }
ratio=null
if [ "$baseline" = 1 ]; then
  [ -n "${seen[baseline-ready]:-}" ] || { say "the baseline did not recover in time"; exit 1; }
  ratio=$(echo "scale=1; ${seen[baseline-ready]} / ${seen[ensemble-whole]}" | bc)
fi
printf '{"node":"%s","variant":"%s","detection_s":%s,"reschedule_s":%s,"fetch_started_s":%s,"container_running_s":%s,"pod_ready_s":%s,"ensemble_whole_s":%s,"baseline_evicted_s":%s,"baseline_ready_s":%s,"baseline_over_operator":%s}\n' \
  "$victim_node" "$victim" "${seen[detection]:-null}" "${seen[reschedule]:-null}" "${seen[fetch-started]:-null}" \
  "${seen[container-running]:-null}" "${seen[pod-ready]:-null}" "${seen[ensemble-whole]}" \
  "${seen[baseline-evicted]:-null}" "${seen[baseline-ready]:-null}" "$ratio"
