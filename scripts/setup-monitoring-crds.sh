#!/usr/bin/env bash
# Generates the real prometheus-operator CRDs (ServiceMonitor, PodMonitor, PrometheusRule) that
# scripts/test-install.sh installs in the test control plane, so that the chart's optional monitoring objects
# are checked against their true schemas (strict field validation), not open stand-ins.
# No download site is reachable here, but the Go module proxy is: the CRDs are generated with controller-gen
# (sigs.k8s.io/controller-tools) from the API types module of prometheus-operator, which is how upstream makes
# them. Output: $VP_CACHE/monitoring-crds/<key>/*.yaml, linked as $VP_CACHE/monitoring-crds/current.
# Cached by the two versions: later runs take no time. Cold: ~1-2 min (controller-gen build + module download).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/env.sh" || true
prom_operator=v0.95.2
controller_tools=v0.20.1
key="prometheus-operator-$prom_operator-controller-gen-$controller_tools"
base="$VP_CACHE/monitoring-crds"
out="$base/$key"
if [ -f "$out/done" ]; then
  ln -sfn "$out" "$base/current"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  [ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || { echo "setup-monitoring-crds: Go is required and was not found" >&2; exit 1; }
echo "setup-monitoring-crds: generating the prometheus-operator $prom_operator CRDs with controller-gen $controller_tools" >&2
began=$(date +%s)
gen="$VP_CACHE/controller-gen/$controller_tools"
if [ ! -x "$gen/controller-gen" ]; then
  mkdir -p "$gen"
  GOBIN="$gen" GOFLAGS="-trimpath -buildvcs=false" nice -n 10 \
    go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$controller_tools"
fi
mod=$(mktemp -d)
trap 'rm -rf "$mod"' EXIT
rm -rf "$out" && mkdir -p "$out"
(
  cd "$mod"
  go mod init vp-monitoring-crds >/dev/null 2>&1
  pkg=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1
  # Getting the package (not just the module) records the sums of everything it imports.
  go get "$pkg@$prom_operator" >/dev/null 2>&1
  # Like upstream: CRD v1, descriptions kept short (the annotation limit of client-side apply does not bite).
  "$gen/controller-gen" "crd:crdVersions=v1,maxDescLen=0,allowDangerousTypes=true" "paths=$pkg" "output:crd:dir=$out"
)
for plural in servicemonitors podmonitors prometheusrules; do
  [ -s "$out/monitoring.coreos.com_$plural.yaml" ] \
    || { echo "setup-monitoring-crds: controller-gen did not write the $plural CRD" >&2; exit 1; }
done
touch "$out/done"
ln -sfn "$out" "$base/current"
echo "setup-monitoring-crds: done in $(( $(date +%s) - began )) s" >&2
