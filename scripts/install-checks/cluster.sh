# shellcheck shell=bash
# Against a private test control plane: Helm install/upgrade/uninstall, the real monitoring CRDs, dry run and
# apply of every install artefact, then the operator running as the chart's ServiceAccount (cluster-wide and
# namespace-scoped) makes the example ensemble Ready with no forbidden call.
# Sourced by scripts/test-install.sh after common.sh (shares its variables, helpers and clean-up).

# --- 6. the test control plane
export VP_CONTROLPLANE_DIR="$work/cp"
scripts/controlplane.sh up --nodes 4 >/dev/null 2>"$work/cp-up.log" || { cat "$work/cp-up.log" >&2; fail "control plane did not start"; }
export KUBECONFIG="$work/cp/data/kubeconfig"
# Helm itself on the fresh API server: install (the CRD from crds/ included), upgrade across the two Deployment
# strategies (leader election on -> off), uninstall (the CRD stays, as Helm does with crds/).
helm install vp-helm "$chart" -n vp-helm --create-namespace --set replicaCount=2 --wait --timeout 90s >"$work/helm.log" \
  || fail "helm install failed"
kubectl get crd variantensembles.vp.dev >/dev/null || fail "helm install did not install the CRD"
helm upgrade vp-helm "$chart" -n vp-helm --set replicaCount=1 --wait --timeout 90s >>"$work/helm.log" \
  || fail "helm upgrade from 2 replicas (RollingUpdate) to 1 (Recreate) failed"
[ "$(kubectl -n vp-helm get deploy vp-helm-vp-operator -o jsonpath='{.spec.strategy.type}')" = Recreate ] \
  || fail "helm upgrade did not switch the strategy to Recreate"
helm uninstall vp-helm -n vp-helm --wait >>"$work/helm.log" || fail "helm uninstall failed"
kubectl -n vp-helm get deploy vp-helm-vp-operator >/dev/null 2>&1 && fail "helm uninstall left the Deployment"
kubectl get crd variantensembles.vp.dev >/dev/null || fail "helm uninstall removed the CRD"
say "helm install (with CRD) / upgrade 2 -> 1 replicas / uninstall work against the API server"
# The real prometheus-operator CRDs (generated from its API module by scripts/setup-monitoring-crds.sh): the
# chart's ServiceMonitor, PodMonitor and PrometheusRule meet their true schemas under strict field validation.
mon="$VP_CACHE/monitoring-crds/current"
for plural in servicemonitors podmonitors prometheusrules; do
  [ -s "$mon/monitoring.coreos.com_$plural.yaml" ] || fail "missing $mon/monitoring.coreos.com_$plural.yaml (run scripts/setup.sh)"
  cat "$mon/monitoring.coreos.com_$plural.yaml"
  echo "---"
done >"$work/monitoring-crds.yaml"
kubectl apply --server-side -f "$work/monitoring-crds.yaml" >/dev/null
kubectl wait --for=condition=Established --timeout=60s -f "$work/monitoring-crds.yaml" >/dev/null
# The schemas are the real ones: a misspelt field or a wrong type is refused, as it would be on a real cluster.
for bad in "endpoints: [{port: http, intervall: 30s}]" "endpoints: [{port: http, interval: 30}]"; do
  if kubectl apply --server-side --dry-run=server -f - >/dev/null 2>&1 <<YAML
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: bad, namespace: default}
spec: {selector: {}, $bad}
YAML
  then fail "the ServiceMonitor CRD accepted: $bad"; fi
done
# Namespaces first, for real: a dry run of a namespaced object needs its namespace to exist.
kubectl create namespace vp-system >/dev/null
kubectl create namespace vp-full >/dev/null
kubectl create namespace monitoring >/dev/null
kubectl apply --server-side -f - >/dev/null <<'YAML'
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: vp-test-critical}
value: 1000000
YAML
helm template vp-full "$chart" -n vp-full -f "$chart/ci/full-values.yaml" --set priorityClassName=vp-test-critical >"$work/full.yaml"

# CRDs first (a dry run of a VariantEnsemble needs its CRD), then everything else: dry run, then real.
kubectl apply --server-side -f charts/vp-operator/crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/variantensembles.vp.dev >/dev/null
kubectl apply --server-side -f manifests/install.yaml --dry-run=server >/dev/null
kubectl apply --server-side -f manifests/install.yaml >"$work/apply.log"
kubectl apply --server-side -f "$work/full.yaml" --dry-run=server >/dev/null
kubectl apply --server-side -f "$work/full.yaml" >>"$work/apply.log"
kubectl apply --server-side -f manifests/examples/fmnist/00-namespace.yaml >>"$work/apply.log"
kubectl apply --server-side -f manifests/examples/fmnist/ --dry-run=server >/dev/null
kubectl apply --server-side -f manifests/examples/fmnist/ >>"$work/apply.log"
say "API server accepted (dry run, then apply) install.yaml, the full-values render and the fmnist example: $(wc -l <"$work/apply.log") objects"
kubectl -n vp-system rollout status deploy/vp-operator --timeout=90s >/dev/null \
  || fail "operator Deployment from install.yaml did not roll out"
kubectl -n vp-full rollout status deploy/vp-full-vp-operator --timeout=90s >/dev/null \
  || fail "operator Deployment from the full values did not roll out"
say "operator Deployments rolled out (default: 1 replica; full: 2 replicas with leader election); vp-system enforces PodSecurity 'restricted'"

# Starts vp-operator with kubeconfig KC (a ServiceAccount token), its Lease in namespace LEASE_NS, extra flags
# after --; waits until ensemble fmnist in ENS_NS is Ready and checks that the operator's log has no forbidden
# call. Sets op_pid and port.
#   run_operator_until_ready KC LEASE_NS ENS_NS LOG WHAT [-- FLAGS...]
run_operator_until_ready() {
  local kc=$1 lease_ns=$2 ens_ns=$3 log=$4 what=$5 ready=
  shift 5
  [ "${1:-}" = "--" ] && shift
  port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  KUBECONFIG="$kc" POD_NAMESPACE="$lease_ns" POD_NAME="$lease_ns-test" RUST_LOG=info \
    "$op_bin" --listen "127.0.0.1:$port" --leader-elect --log-format text "$@" >"$log" 2>&1 &
  op_pid=$!
  for _ in $(seq 1 240); do
    kill -0 "$op_pid" 2>/dev/null || { tail -n 30 "$log" >&2; fail "vp-operator ($what) exited"; }
    ready=$(kubectl -n "$ens_ns" get ve fmnist -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    [ "$ready" = True ] && break
    sleep 0.5
  done
  if [ "$ready" != True ]; then
    kubectl -n "$ens_ns" get ve fmnist -o yaml >&2 || true
    tail -n 30 "$log" >&2
    fail "the ensemble in $ens_ns did not become Ready under $what within 120 s"
  fi
  if grep -qi 'forbidden' "$log"; then
    grep -i 'forbidden' "$log" | head -5 >&2
    fail "the operator made a forbidden call under $what"
  fi
}

# --- 7. the operator as the chart's ServiceAccount reconciles the example
op_bin=${VP_OPERATOR_BIN:-}
if [ -z "$op_bin" ]; then
  build_bins
  op_bin="$CARGO_TARGET_DIR/debug/vp-operator"
fi
[ -x "$op_bin" ] || fail "no vp-operator binary at $op_bin"
server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$work/ca.crt"
token=$(kubectl -n vp-system create token vp-operator --duration=1h)
sa_kc="$work/sa-kubeconfig"
KUBECONFIG="$sa_kc" kubectl config set-cluster cp --server="$server" --certificate-authority="$work/ca.crt" --embed-certs >/dev/null
KUBECONFIG="$sa_kc" kubectl config set-credentials sa --token="$token" >/dev/null
KUBECONFIG="$sa_kc" kubectl config set-context sa --cluster=cp --user=sa >/dev/null
KUBECONFIG="$sa_kc" kubectl config use-context sa >/dev/null
# The chart's account may not read Secrets (least privilege); a wrong kubeconfig would pass this unnoticed.
if KUBECONFIG="$sa_kc" kubectl auth can-i list secrets -A >/dev/null 2>&1; then
  fail "the chart's ServiceAccount may list Secrets"
fi
run_operator_until_ready "$sa_kc" vp-system vp-examples "$work/operator.log" "the chart's ServiceAccount"
avail=$(kubectl -n vp-examples get ve fmnist -o jsonpath='{.status.availableVariants}/{.status.desiredVariants} accuracy {.status.expectedAccuracy}')
pods=$(kubectl -n vp-examples get pods -l app.kubernetes.io/component=variant -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u | wc -l)
say "operator as ServiceAccount vp-system/vp-operator: example ensemble Ready, $avail, variants on $pods node(s), no forbidden call"
curl -fsS "http://127.0.0.1:$port/metrics" >"$work/operator.metrics"
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null && curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null
for m in vp_operator_reconciles_total vp_operator_reconcile_duration_seconds vp_ensemble_available_variants \
  vp_ensemble_desired_variants vp_ensemble_expected_accuracy vp_operator_leader; do
  grep -q "^$m" "$work/operator.metrics" || fail "the operator's /metrics lacks $m"
  grep -qx "$m" "$work/used-metrics" || fail "$m is exported but unused by dashboard/rules (update this list or the dashboard)"
done
grep -q '^vp_operator_leader 1' "$work/operator.metrics" || fail "the operator did not become leader"
say "operator /metrics scraped: the dashboard's operator series are exported (leader 1)"
kill -TERM "$op_pid" && wait "$op_pid" 2>/dev/null || true
op_pid=

# --- 7b. namespace-scoped install (watchNamespace): the operator reconciles its namespace and may touch no other
kubectl create namespace vp-scoped-op >/dev/null
kubectl create namespace vp-scoped >/dev/null
kubectl apply --server-side -f "$work/scoped.yaml" --dry-run=server >/dev/null
kubectl apply --server-side -f "$work/scoped.yaml" >/dev/null
for f in manifests/examples/fmnist/[1-9]*.yaml; do
  sed 's/^  namespace: vp-examples$/  namespace: vp-scoped/' "$f"
  echo "---"
done >"$work/scoped-example.yaml"
kubectl apply --server-side -f "$work/scoped-example.yaml" >/dev/null
token=$(kubectl -n vp-scoped-op create token vp-scoped-vp-operator --duration=1h)
scoped_kc="$work/scoped-kubeconfig"
cp "$sa_kc" "$scoped_kc"
KUBECONFIG="$scoped_kc" kubectl config set-credentials sa --token="$token" >/dev/null
for deny in "list pods -A" "list pods -n vp-examples" "create pods -n vp-examples" "list variantensembles.vp.dev -A" "list secrets -n vp-scoped"; do
  # shellcheck disable=SC2086
  if KUBECONFIG="$scoped_kc" kubectl auth can-i $deny >/dev/null 2>&1; then
    fail "the namespace-scoped ServiceAccount may: $deny"
  fi
done
for allow in "create pods -n vp-scoped" "list nodes" "watch leases.coordination.k8s.io -n kube-node-lease"; do
  # shellcheck disable=SC2086
  KUBECONFIG="$scoped_kc" kubectl auth can-i $allow >/dev/null 2>&1 || fail "the namespace-scoped ServiceAccount may not: $allow"
done
run_operator_until_ready "$scoped_kc" vp-scoped-op vp-scoped "$work/scoped-operator.log" \
  "the namespace-scoped ServiceAccount" -- --watch-namespace vp-scoped
say "namespace-scoped install (watchNamespace=vp-scoped): RBAC confined to vp-scoped (+ Nodes, node Leases), the operator made its ensemble Ready with no forbidden call"
kill -TERM "$op_pid" && wait "$op_pid" 2>/dev/null || true
op_pid=
VP_CONTROLPLANE_DIR="$work/cp" scripts/controlplane.sh down >/dev/null 2>&1
