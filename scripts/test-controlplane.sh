#!/usr/bin/env bash
# Test control plane checks: gofmt and the Go unit tests of tests/controlplane, then a smoke test of the manual
# workflow (scripts/controlplane.sh up, kubectl, node operations, down) that also checks nothing is left
# running. The Rust proof tests (crates/vp-testenv) run with the workspace in scripts/test-rust.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# env.sh may return non-zero when no ONNX Runtime library is found; only its exports matter here.
. "$root/scripts/env.sh" || true
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"

cd "$root/tests/controlplane"
unformatted=$(gofmt -l .)
[ -z "$unformatted" ] || { echo "test-controlplane: gofmt needed: $unformatted" >&2; exit 1; }
# -vet=off: vet analyses every dependency (all of k8s.io/kubernetes) for facts, which costs minutes on a fresh
# machine; run `go vet ./...` in tests/controlplane by hand after changing the Go code (docs/testing.md).
GOFLAGS="-trimpath -mod=readonly -buildvcs=false" nice -n 10 go test -vet=off ./...

# Smoke test of scripts/controlplane.sh in a throw-away directory.
export VP_CONTROLPLANE_DIR
VP_CONTROLPLANE_DIR=$(mktemp -d)
cp="$root/scripts/controlplane.sh"
cleanup() { "$cp" down >/dev/null 2>&1 || true; rm -rf "$VP_CONTROLPLANE_DIR"; }
trap cleanup EXIT
began=$(date +%s%N)
"$cp" up --nodes 2
echo "test-controlplane: start took $(( ($(date +%s%N) - began) / 1000000 )) ms"
export KUBECONFIG="$VP_CONTROLPLANE_DIR/data/kubeconfig"
pid=$(cat "$VP_CONTROLPLANE_DIR/pid")
ready=$(kubectl get nodes -l vp.dev/simulated-node=true \
  -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$' || true)
[ "$ready" = 2 ] || { echo "test-controlplane: expected 2 Ready nodes, got $ready" >&2; exit 1; }
"$cp" node add edge-extra --label zone=z1 --cpu 2 >/dev/null
"$cp" node kill edge-0 | grep -q '"state":"Dead"'
"$cp" node list | grep -q '"name":"edge-extra","state":"Alive"'
if "$cp" node kill no-such-node 2>/dev/null; then echo "test-controlplane: killing an unknown node succeeded" >&2; exit 1; fi
kubectl auth can-i '*' '*' >/dev/null
"$cp" down
sleep 0.5
if kill -0 "$pid" 2>/dev/null; then echo "test-controlplane: control plane $pid still running after down" >&2; exit 1; fi
[ ! -e "$VP_CONTROLPLANE_DIR/data" ] || { echo "test-controlplane: data left after down" >&2; exit 1; }
echo "test-controlplane: smoke test passed"
