#!/usr/bin/env bash
# Checks the install artefacts (charts/vp-operator, manifests/, docker/) and, against the real API server of a
# private test control plane, that they are accepted and work:
#  chart.sh:
#  1. generated files are fresh (chart CRDs, manifests/install.yaml, the fmnist example);
#  2. the chart's RBAC rules equal crates/vp-operator/rbac/operator.yaml (what the operator is tested under);
#  3. helm lint --strict and helm template with default and full values; values.schema.json rejects bad values;
#     the rendered operator pod is hardened;
#  4. PromQL of the alert rules and the dashboard parses (promtool) and uses only metrics the binaries register;
#  docker.sh:
#  5. the Dockerfiles copy paths that exist and build binaries that are workspace bins;
#  cluster.sh:
#  6. control plane: helm install/upgrade/uninstall; server-side dry run, then a real apply of install.yaml, the full-values render and the
#     example; the operator Deployment rolls out; then the operator binary, running as the chart's ServiceAccount
#     (token of that account, nothing else), makes the example ensemble Ready, and its /metrics is scraped;
#  prometheus.sh:
#  7. a real Prometheus scrapes a local ensemble (vpctl run) while vpctl eval kills and revives a variant: the
#     available-variants and expected-accuracy series drop and recover.
# Binaries: $VP_OPERATOR_BIN and $VP_BIN_DIR (vpctl, vp-variant, vp-aggregator), else built with cargo.
# Everything it starts is stopped on exit, also on failure. Each concern is a file in scripts/install-checks/
# (shell parts sourced in order, Python helpers run by them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/install-checks/common.sh
for part in chart docker cluster prometheus; do
  # shellcheck source=/dev/null
  . "scripts/install-checks/$part.sh"
done
say "all checks passed in $(( $(date +%s) - t0 )) s"
