#!/usr/bin/env bash
# Builds the test control plane (tests/controlplane: etcd + kube-apiserver + kube-controller-manager +
# kube-scheduler + node simulator in one Go binary) and helm, from the Go module proxy, into $VP_CACHE/bin.
# Idempotent: outputs are cached under a key of their sources (go.mod, go.sum, *.go; helm's version), so a
# second run takes well under a second. A cold build on a fresh 2-core machine takes ~9 min when the machine is
# idle, ~26 min when it is busy (docs/testing.md); GOMODCACHE and GOCACHE keep their defaults and make later
# rebuilds incremental.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# env.sh may return non-zero when no ONNX Runtime library is found; only its exports matter here.
. "$root/scripts/env.sh" || true
# KUBE_LDFLAGS: the binary reports the pinned Kubernetes version (v1.37.2), as kubectl and Helm expect.
. "$root/scripts/lib/kube-version.sh"
helm_version=v4.3.1
src="$root/tests/controlplane"
bin="$VP_CACHE/bin"
mkdir -p "$bin"

if ! command -v go >/dev/null 2>&1; then
  [ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || { echo "setup-controlplane: Go (>= 1.26) is required and was not found" >&2; exit 1; }

key=$( (cd "$src" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs sha256sum; echo "$KUBE_LDFLAGS") | sha256sum | cut -c1-16)
out="$VP_CACHE/controlplane/$key/vp-controlplane"
if [ ! -x "$out" ]; then
  echo "setup-controlplane: building vp-controlplane ($key); cold: ~7 min on an idle 2-core machine, ~21 min on a busy one; rebuild: ~30 s" >&2
  began=$(date +%s)
  mkdir -p "$(dirname "$out")"
  (cd "$src" && GOFLAGS="-trimpath -mod=readonly -buildvcs=false" nice -n 10 go build -ldflags "$KUBE_LDFLAGS" -o "$out.tmp" ./cmd/vp-controlplane)
  mv "$out.tmp" "$out"
  echo "setup-controlplane: built vp-controlplane in $(( $(date +%s) - began )) s" >&2
  # Older builds are not needed any more.
  find "$VP_CACHE/controlplane" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
fi
ln -sfn "$out" "$bin/vp-controlplane"

helm_out="$VP_CACHE/helm/$helm_version/helm"
if [ ! -x "$helm_out" ]; then
  echo "setup-controlplane: building helm $helm_version from the Go module proxy (~2 min cold on an idle machine)" >&2
  began=$(date +%s)
  mkdir -p "$(dirname "$helm_out")"
  GOBIN="$(dirname "$helm_out")" GOFLAGS="-trimpath -buildvcs=false" nice -n 10 go install "helm.sh/helm/v4/cmd/helm@$helm_version"
  echo "setup-controlplane: built helm in $(( $(date +%s) - began )) s" >&2
fi
ln -sfn "$helm_out" "$bin/helm"
