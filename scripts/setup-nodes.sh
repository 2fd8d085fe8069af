#!/usr/bin/env bash
# Installs what the real-node test site (scripts/site.sh, scripts/test-e2e.sh) needs: Debian's runc, standard
# CNI plugins (bridge, host-local, portmap, loopback) and iptables (kube-proxy's rules, inside the site's network
# namespaces only), and builds from the Go module proxy into $VP_CACHE:
#   containerd, ctr, containerd-shim-runc-v2 (a containerd v2 release, from its own Go module)
#   kubelet, kube-proxy (k8s.io/kubernetes from tests/controlplane's module: the same pinned version and replaces
#                        as the test control plane, declared there as `tool`s)
#   vp-pause           (the pod sandbox program of the site's pause image; tests/controlplane/cmd/vp-pause)
#   coredns            (cluster DNS, from its own Go module)
# Idempotent: each output is cached under a key of its sources (a version, or tests/controlplane's go.mod and
# go.sum plus the link flags), so a second run takes well under a second. Cold, on an idle 2-core machine:
# containerd ~4 min, kubelet + kube-proxy ~3 min once the control plane module is built, CoreDNS ~3.5 min.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# env.sh may return non-zero when no ONNX Runtime library is found; only its exports matter here.
. "$root/scripts/env.sh" || true
. "$root/scripts/lib/kube-version.sh"
containerd_version=v2.2.9
coredns_version=v1.14.7
bin="$VP_CACHE/bin"
mkdir -p "$bin"

debs=()
command -v runc >/dev/null 2>&1 || debs+=(runc)
[ -x /usr/lib/cni/bridge ] || debs+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || debs+=(iptables)
if [ ${#debs[@]} -gt 0 ]; then
  echo "setup-nodes: installing Debian packages: ${debs[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
  [ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || { echo "setup-nodes: Go (>= 1.26) is required and was not found" >&2; exit 1; }

# build NAME DIR DONE_FILE COMMAND...: runs COMMAND (which writes into DIR.tmp) unless DIR/DONE_FILE exists.
build() {
  local name=$1 dir=$2 done=$3
  shift 3
  [ -x "$dir/$done" ] && return 0
  echo "setup-nodes: building $name (cold: a few minutes)" >&2
  local began
  began=$(date +%s)
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  "$@"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  echo "setup-nodes: built $name in $(( $(date +%s) - began )) s" >&2
}

containerd_dir="$VP_CACHE/containerd/$containerd_version"
build "containerd $containerd_version" "$containerd_dir" containerd-shim-runc-v2 \
  env GOBIN="$containerd_dir.tmp" GOFLAGS="-trimpath -buildvcs=false" nice -n 10 go install \
    -tags "no_btrfs no_devmapper no_zfs" \
    "github.com/containerd/containerd/v2/cmd/containerd@$containerd_version" \
    "github.com/containerd/containerd/v2/cmd/ctr@$containerd_version" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$containerd_version"

src="$root/tests/controlplane"
kube_key=$( (cd "$src" && cat go.mod go.sum cmd/vp-pause/*.go; echo "$KUBE_LDFLAGS") | sha256sum | cut -c1-16)
kube_dir="$VP_CACHE/nodes/$kube_key"
build_kube() {
  local cmd
  for cmd in kubelet kube-proxy; do
    (cd "$src" && GOFLAGS="-trimpath -mod=readonly -buildvcs=false" nice -n 10 \
      go build -ldflags "$KUBE_LDFLAGS" -o "$kube_dir.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
  # The pod sandbox program of the site's pause image (scripts/build-images.sh), static.
  (cd "$src" && CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly -buildvcs=false" \
    go build -ldflags "-s -w" -o "$kube_dir.tmp/vp-pause" ./cmd/vp-pause)
}
build "kubelet, kube-proxy and vp-pause ($kube_key)" "$kube_dir" vp-pause build_kube
# Older builds are not needed any more.
find "$VP_CACHE/nodes" -mindepth 1 -maxdepth 1 -type d ! -name "$kube_key" -exec rm -rf {} +

coredns_dir="$VP_CACHE/coredns/$coredns_version"
build "CoreDNS $coredns_version" "$coredns_dir" coredns \
  env GOBIN="$coredns_dir.tmp" GOFLAGS="-trimpath -buildvcs=false" nice -n 10 go install \
    "github.com/coredns/coredns@$coredns_version"

for f in containerd ctr containerd-shim-runc-v2; do ln -sfn "$containerd_dir/$f" "$bin/$f"; done
for f in kubelet kube-proxy vp-pause; do ln -sfn "$kube_dir/$f" "$bin/$f"; done
ln -sfn "$coredns_dir/coredns" "$bin/coredns"
