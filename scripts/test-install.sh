#!/usr/bin/env bash
# Checks the install artefacts (charts/vp-operator, manifests/, docker/) and, against the real API server of a
# private test control plane, that they are accepted and work:
#  1. generated files are fresh (chart CRDs, manifests/install.yaml, the fmnist example);
#  2. the chart's RBAC rules equal crates/vp-operator/rbac/operator.yaml (what the operator is tested under);
#  3. helm lint --strict and helm template with default and full values; values.schema.json rejects bad values;
#     the rendered operator pod is hardened;
#  4. PromQL of the alert rules and the dashboard parses (promtool) and uses only metrics the binaries register;
#  5. the Dockerfiles copy paths that exist and build binaries that are workspace bins;
#  6. control plane: helm install/upgrade/uninstall; server-side dry run, then a real apply of install.yaml, the full-values render and the
#     example; the operator Deployment rolls out; then the operator binary, running as the chart's ServiceAccount
#     (token of that account, nothing else), makes the example ensemble Ready, and its /metrics is scraped;
#  7. a real Prometheus scrapes a local ensemble (vpctl run) while vpctl eval kills and revives a variant: the
#     available-variants and expected-accuracy series drop and recover.
# Binaries: $VP_OPERATOR_BIN and $VP_BIN_DIR (vpctl, vp-variant, vp-aggregator), else built with cargo.
# Everything it starts is stopped on exit, also on failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh || true
chart=charts/vp-operator
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
t0=$(date +%s)
work=$(mktemp -d)
op_pid= run_pid= prom_pid=
cleanup() {
  set +e
  for p in $op_pid $prom_pid $run_pid; do
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p"
      wait "$p" 2>/dev/null
    fi
  done
  VP_CONTROLPLANE_DIR="$work/cp" scripts/controlplane.sh down >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
say() { echo "test-install: $*"; }
# Builds every workspace binary once (dev profile, like scripts/test-rust.sh, so the artefacts are shared).
built=0
build_bins() {
  [ "$built" = 1 ] && return 0
  cargo build --quiet --locked --workspace --bins
  built=1
}
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }

for tool in helm kubectl promtool; do
  command -v "$tool" >/dev/null || fail "$tool is missing (run scripts/setup.sh)"
done

# --- 1. generated files
scripts/render-manifests.sh --check

# --- 2. RBAC of the chart == the operator's tested rules
helm template vp-operator "$chart" -n vp-system >"$work/default.yaml"
helm template vp-full "$chart" -n vp-full -f "$chart/ci/full-values.yaml" >"$work/full.yaml"
helm template vp-scoped "$chart" -n vp-scoped-op --set watchNamespace=vp-scoped >"$work/scoped.yaml"
"$py" - "$work/default.yaml" crates/vp-operator/rbac/operator.yaml "$work/scoped.yaml" <<'PY'
import sys, yaml
def norm(rules):
    return sorted((tuple(sorted(r.get("apiGroups", []))), tuple(sorted(r["resources"])), tuple(sorted(r["verbs"]))) for r in rules)
def rules(path):
    out = {}
    for d in yaml.safe_load_all(open(path)):
        if d and d["kind"] in ("ClusterRole", "Role"):
            out[d["kind"]] = norm(d["rules"])
    return out
chart, tested = rules(sys.argv[1]), rules(sys.argv[2])
if chart != tested:
    sys.exit(f"chart RBAC differs from {sys.argv[2]}:\n chart:  {chart}\n tested: {tested}")
# Namespace-scoped: the same rules, split into a Role in the watched namespace, a ClusterRole for Nodes only and a
# Role for node Leases in kube-node-lease (plus the same leader-election Role).
docs = [d for d in yaml.safe_load_all(open(sys.argv[3])) if d and d["kind"] in ("ClusterRole", "Role")]
where = {(d["kind"], d["metadata"].get("namespace")): norm(d["rules"]) for d in docs if not d["metadata"]["name"].endswith("-leader-election")}
assert set(where) == {("Role", "vp-scoped"), ("ClusterRole", None), ("Role", "kube-node-lease")}, where
assert where[("ClusterRole", None)] == [(("",), ("nodes",), ("get", "list", "watch"))], where
union = sorted(r for rs in where.values() for r in rs)
if union != tested["ClusterRole"]:
    sys.exit(f"namespace-scoped RBAC differs from {sys.argv[2]}:\n scoped: {union}\n tested: {tested['ClusterRole']}")
print("test-install: chart RBAC equals crates/vp-operator/rbac/operator.yaml (cluster-wide, and split by namespace with watchNamespace)")
PY

# --- 3. lint, template, schema, hardening
helm lint --strict "$chart" >/dev/null
helm lint --strict "$chart" -f "$chart/ci/full-values.yaml" >/dev/null
say "helm lint --strict: default and full values pass"
for bad in "replicaCount=-1" "operator.logFormat=xml" "image.pullPolicy=Sometimes" "operator.port=70000" "unknownKey=1" \
  "prometheusRule.degradedFor=soon" "watchNamespace=Not_A_Namespace"; do
  if helm template x "$chart" --set "$bad" >/dev/null 2>"$work/err"; then
    fail "values.schema.json accepted --set $bad"
  fi
done
say "values.schema.json rejects 7 bad values"
"$py" - "$work/default.yaml" "$work/full.yaml" "$work/scoped.yaml" <<'PY'
import sys, yaml
for path in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    kinds = sorted(d["kind"] for d in docs)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, psc
    assert psc["seccompProfile"]["type"] == "RuntimeDefault", psc
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, sc
    assert sc["capabilities"]["drop"] == ["ALL"], sc
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["resources"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    scoped = "--watch-namespace=vp-scoped" in c["args"]
    assert scoped == path.endswith("scoped.yaml"), (path, c["args"])
    leader = "--leader-elect" in c["args"]
    assert leader == (dep["spec"]["replicas"] > 1), (dep["spec"]["replicas"], c["args"])
    print(f"test-install: {path.rsplit('/',1)[-1]}: {len(docs)} objects {kinds}; operator pod hardened; leader election {leader}")
PY
grep -q 'kind: ServiceMonitor' "$work/full.yaml" && grep -q 'kind: PodMonitor' "$work/full.yaml" \
  && grep -q 'kind: PrometheusRule' "$work/full.yaml" && grep -q 'grafana_dashboard: "1"' "$work/full.yaml" \
  || fail "full values do not render the monitoring objects"
if grep -Eq 'kind: (ServiceMonitor|PodMonitor|PrometheusRule)|grafana_dashboard' "$work/default.yaml"; then
  fail "default values render monitoring objects (they must be off by default)"
fi

# --- 4. PromQL parses and names only registered metrics
"$py" - "$work/full.yaml" "$chart/dashboards/vp-overview.json" "$work" <<'PY'
import json, re, sys, yaml, glob
full, dash_path, work = sys.argv[1:]
rule = next(d for d in yaml.safe_load_all(open(full)) if d and d["kind"] == "PrometheusRule")
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(f"{work}/alerts.yaml", "w"))
dash = json.load(open(dash_path))
exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
exprs += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
def grafana_to_promql(e):
    # Grafana variables -> values Prometheus accepts; label_values(m, l) is Grafana's, its first argument is PromQL.
    m = re.fullmatch(r"label_values\((.*),\s*\w+\)", e)
    e = m.group(1) if m else e
    return e.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$ensemble", ".*")
rec = [{"record": f"dashboard:expr_{i}", "expr": grafana_to_promql(e)} for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rec}]}, open(f"{work}/dashboard-rules.yaml", "w"))
registered = set()
for f in glob.glob("crates/*/src/**/*.rs", recursive=True):
    registered |= set(re.findall(r'"(vp_[a-z0-9_]+)"', open(f).read()))
# Names used by the metrics registrations only (Opts::new / HistogramOpts::new / IntGauge::new / Gauge::new).
used = set()
all_exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]] + [r["expr"] for r in rec]
for e in all_exprs:
    for name in re.findall(r"\b(vp_[a-z0-9_]+)\b", e):
        used.add(re.sub(r"_(bucket|sum|count)$", "", name) if name.endswith(("_bucket", "_sum", "_count")) else name)
missing = sorted(used - registered)
if missing:
    sys.exit(f"dashboard/rules use metrics no binary registers: {missing}")
open(f"{work}/used-metrics", "w").write("\n".join(sorted(used)) + "\n")
print(f"test-install: dashboard ({len(exprs)} queries) and rules use {len(used)} metrics, all registered in crates/*/src")
PY
promtool check rules "$work/alerts.yaml" "$work/dashboard-rules.yaml" >"$work/promtool.log" 2>&1 \
  || { cat "$work/promtool.log" >&2; fail "promtool rejects the alert rules or dashboard queries"; }
say "promtool: alert rules and dashboard queries parse ($(grep -c SUCCESS "$work/promtool.log") file(s) SUCCESS)"

# --- 5. Dockerfiles: COPY sources exist, built packages/bins are workspace bins
if [ -d docker ]; then
  bins=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null \
    | jq -r '.packages[] | .name as $p | .targets[] | select(.kind[] == "bin") | "\($p)/\(.name)"')
  [ -n "$bins" ] || fail "cargo metadata listed no workspace binaries"
  for f in docker/*Dockerfile*; do
    # COPY --from=... copies between stages; only plain COPY reads the build context (the repo root).
    grep -E '^COPY ' "$f" | grep -v -- '--from=' | while read -r _ rest; do
      for src in $(echo "$rest" | tr ' ' '\n' | grep -v '^--' | sed '$d'); do
        [ -e "$src" ] || fail "$f copies $src, which does not exist"
      done
    done
    for pb in $(grep -oE 'VP_BIN=[a-z0-9-]+/[a-z0-9-]+|--bin [a-z0-9-]+' "$f" | sed 's/^VP_BIN=//; s/^--bin //' | sort -u); do
      case "$pb" in
        */*) echo "$bins" | grep -qx "$pb" || fail "$f builds $pb, which is not a workspace bin" ;;
        *) echo "$bins" | grep -q "/$pb\$" || fail "$f builds --bin $pb, which is not a workspace bin" ;;
      esac
    done
  done
  # The variant image's ONNX Runtime: the same version the tests run (models/requirements.txt), taken from the
  # wheel at the path the tests' own copy has, and ORT_DYLIB_PATH names the file the image copies it to.
  df=docker/Dockerfile
  ort_image=$(sed -n 's/^ARG ORT_VERSION=//p' "$df")
  ort_tests=$(sed -n 's/^onnxruntime==//p' models/requirements.txt)
  [ -n "$ort_image" ] && [ "$ort_image" = "$ort_tests" ] \
    || fail "$df builds ONNX Runtime '$ort_image' but the tests use '$ort_tests' (models/requirements.txt)"
  wheel_lib=$("$py" -c 'import onnxruntime, os, glob; print(" ".join(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*"))))')
  [ -n "$wheel_lib" ] || fail "the onnxruntime wheel has no capi/libonnxruntime.so.*, which $df copies"
  grep -q 'cp /wheel/onnxruntime/capi/libonnxruntime.so.\* /ort/libonnxruntime.so' "$df" \
    || fail "$df no longer copies onnxruntime/capi/libonnxruntime.so.* from the wheel"
  dylib=$(sed -n 's/^ENV ORT_DYLIB_PATH=//p' "$df")
  grep -q "^COPY --from=ort /ort/libonnxruntime.so $dylib\$" "$df" \
    || fail "$df sets ORT_DYLIB_PATH=$dylib but does not copy the library there"
  say "Dockerfiles: COPY sources exist; their binaries are workspace bins; the variant image's ONNX Runtime is $ort_image like the tests', from the wheel path the tests' copy has, at ORT_DYLIB_PATH"
fi

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

# --- 8. a real Prometheus scrapes a local ensemble (vpctl run); a variant is killed and comes back
bin_dir=${VP_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  build_bins
  bin_dir="$CARGO_TARGET_DIR/debug"
fi
[ -n "${ORT_DYLIB_PATH:-}" ] || fail "ORT_DYLIB_PATH is not set (run scripts/setup.sh for the Python env's ONNX Runtime)"
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
agg_port=$(free_port)
prom_port=$(free_port)
state="$work/vpctl"
VP_BIN_DIR="$bin_dir" "$bin_dir/vpctl" run models/fmnist/ensemble.yaml --port "$agg_port" --variant-port 0 \
  --state-dir "$state" >"$work/vpctl-run.log" 2>&1 &
run_pid=$!
for _ in $(seq 1 240); do
  kill -0 "$run_pid" 2>/dev/null || { tail -n 20 "$work/vpctl-run.log" >&2; fail "vpctl run exited"; }
  curl -fsS "http://127.0.0.1:$agg_port/v2/health/ready" >/dev/null 2>&1 && [ -f "$state/run.json" ] && break
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$agg_port/v2/health/ready" >/dev/null || fail "the local ensemble did not become ready"
variant_targets=$(jq -c '[.variants[].url | sub("^https?://"; "")]' "$state/run.json")
cat >"$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$work/alerts.yaml"]
scrape_configs:
  - job_name: aggregator
    static_configs: [{targets: ["127.0.0.1:$agg_port"], labels: {namespace: local, ensemble: fmnist}}]
  - job_name: variants
    static_configs: [{targets: $variant_targets, labels: {namespace: local, ensemble: fmnist}}]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!
q() { curl -fsS --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" \
  | jq -r '.data.result[0].value[1] // "none"'; }
wait_for() { # wait_for DESCRIPTION QUERY EXPECTED SECONDS
  local v=none
  for _ in $(seq 1 $(( $4 * 2 ))); do
    v=$(q "$2" 2>/dev/null || echo none)
    [ "$v" = "$3" ] && return 0
    sleep 0.5
  done
  fail "$1: $2 = $v, expected $3"
}
wait_for "Prometheus scrapes the aggregator" 'vp_aggregator_available_variants' 4 60
full_acc=$(q 'vp_aggregator_expected_accuracy')
# The strongest variant: without it the subset's expected accuracy at k=3 drops (0.8941 -> 0.8862 in the manifest;
# losing the weakest one, w035-r16, would raise it to 0.8974, as the manifest's subset table says).
victim=w050-r28
# vpctl eval SIGKILLs the variant at 20% of the stream and holds it down until 70% (then vpctl run restarts it).
"$bin_dir/vpctl" eval --url "http://127.0.0.1:$agg_port" --state-dir "$state" --limit 3000 --concurrency 2 \
  --kill "$victim@20%" --revive "$victim@70%" >"$work/eval.log" 2>&1 \
  || { tail -n 20 "$work/eval.log" >&2; fail "vpctl eval failed"; }
wait_for "recovery" 'vp_aggregator_available_variants' 4 60
min_avail=$(q 'min_over_time(vp_aggregator_available_variants[10m])')
min_acc=$(q 'min_over_time(vp_aggregator_expected_accuracy[10m])')
now_acc=$(q 'vp_aggregator_expected_accuracy')
[ "$min_avail" = 3 ] || fail "Prometheus never saw the kill: min available variants $min_avail (expected 3)"
"$py" -c "import sys; f, m, n = map(float, sys.argv[1:]); sys.exit(0 if m < f and n == f else 1)" \
  "$full_acc" "$min_acc" "$now_acc" || fail "expected accuracy did not drop and recover: full $full_acc, min $min_acc, now $now_acc"
say "real Prometheus scraped vpctl run: killing $victim dropped available variants 4 -> $min_avail and expected accuracy $full_acc -> $min_acc; both recovered"
# Every data-plane series the dashboard and alerts use is among what Prometheus really scraped (a histogram as
# its _bucket series); the operator's were checked against its own scrape above.
scraped=$(curl -fsS "http://127.0.0.1:$prom_port/api/v1/label/__name__/values" | jq -r '.data[]')
n=0
for m in $(grep -E '^vp_(aggregator|variant)_' "$work/used-metrics"); do
  printf '%s\n' "$scraped" | grep -qx -e "$m" -e "${m}_bucket" \
    || fail "the dashboard or rules use $m, which the aggregator and variants do not export (scraped: $(printf '%s\n' "$scraped" | grep -c '^vp_') vp_ series)"
  n=$((n + 1))
done
[ "$n" -ge 5 ] || fail "expected at least 5 data-plane metrics in the dashboard and rules, found $n"
say "the $n data-plane metrics used by the dashboard and rules are all in Prometheus' scrape of the aggregator and variants"
kill -TERM "$prom_pid" "$run_pid" 2>/dev/null; wait "$prom_pid" "$run_pid" 2>/dev/null || true
prom_pid= run_pid=
say "all checks passed in $(( $(date +%s) - t0 )) s"
