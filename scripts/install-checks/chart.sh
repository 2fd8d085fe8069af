# shellcheck shell=bash
# Static checks of the chart and generated files (no cluster): generated files are fresh; the chart RBAC equals
# the tested rules; helm lint, schema rejections and a hardened operator pod; PromQL parses and names only
# registered metrics.
# Sourced by scripts/test-install.sh after common.sh (shares its variables, helpers and clean-up).

# --- 1. generated files
scripts/render-manifests.sh --check

# --- 2. RBAC of the chart == the operator's tested rules
helm template vp-operator "$chart" -n vp-system >"$work/default.yaml"
helm template vp-full "$chart" -n vp-full -f "$chart/ci/full-values.yaml" >"$work/full.yaml"
helm template vp-scoped "$chart" -n vp-scoped-op --set watchNamespace=vp-scoped >"$work/scoped.yaml"
"$py" scripts/install-checks/rbac_matches_tested.py "$work/default.yaml" crates/vp-operator/rbac/operator.yaml "$work/scoped.yaml"

# --- 3. lint, template, schema, hardening
helm lint --strict "$chart" >/dev/null
helm lint --strict "$chart" -f "$chart/ci/full-values.yaml" >/dev/null
say "helm lint --strict: default and full values pass"
for bad in "replicaCount=-1" "operator.logFormat=xml" "image.pullPolicy=Sometimes" "operator.port=70000" "unknownKey=1" \
  "prometheusRule.degradedFor=soon" "watchNamespace=Not_A_Namespace" "image.digest=latest" \
  "operator.hostPathPrefixes[0]=relative/path"; do
  if helm template x "$chart" --set "$bad" >/dev/null 2>"$work/err"; then
    fail "values.schema.json accepted --set $bad"
  fi
done
say "values.schema.json rejects 9 bad values"
"$py" scripts/install-checks/operator_pod_hardened.py "$work/default.yaml" "$work/full.yaml" "$work/scoped.yaml"
grep -q 'kind: ServiceMonitor' "$work/full.yaml" && grep -q 'kind: PodMonitor' "$work/full.yaml" \
  && grep -q 'kind: PrometheusRule' "$work/full.yaml" && grep -q 'grafana_dashboard: "1"' "$work/full.yaml" \
  || fail "full values do not render the monitoring objects"
if grep -Eq 'kind: (ServiceMonitor|PodMonitor|PrometheusRule)|grafana_dashboard' "$work/default.yaml"; then
  fail "default values render monitoring objects (they must be off by default)"
fi

# Digest pinning: image.digest (full values) replaces the tag.
grep -Eq 'image: "ghcr.io/variant-parallel/vp-operator@sha256:[0-9a-f]{64}"' "$work/full.yaml" \
  || fail "image.digest does not pin the operator image by digest"
grep -q 'kind: NetworkPolicy' "$work/default.yaml" || fail "default values render no NetworkPolicy for the operator"
say "chart: image.digest pins the operator image; the operator's NetworkPolicy renders"

# --- 4. PromQL parses and names only registered metrics
"$py" scripts/install-checks/promql_metrics.py "$work/full.yaml" "$chart/dashboards/vp-overview.json" "$work"
promtool check rules "$work/alerts.yaml" "$work/dashboard-rules.yaml" >"$work/promtool.log" 2>&1 \
  || { cat "$work/promtool.log" >&2; fail "promtool rejects the alert rules or dashboard queries"; }
say "promtool: alert rules and dashboard queries parse ($(grep -c SUCCESS "$work/promtool.log") file(s) SUCCESS)"
