# Sourced by the setup scripts: KUBE_VERSION (the k8s.io/kubernetes version tests/controlplane pins, e.g.
# v1.37.2) and KUBE_LDFLAGS, the link flags upstream's build sets so that a binary built from the Go module
# reports that version (without them the API server says v0.0.0-master, which kubectl and Helm reject or warn
# about, and kubelets report it as their node version).
# shellcheck shell=bash
KUBE_VERSION=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$root/tests/controlplane/go.mod")
[ -n "$KUBE_VERSION" ] || { echo "kube-version: no k8s.io/kubernetes requirement in tests/controlplane/go.mod" >&2; exit 1; }
kube_minor=${KUBE_VERSION#v*.}
kube_minor=${kube_minor%%.*}
kube_major=${KUBE_VERSION#v}
kube_major=${kube_major%%.*}
kv=k8s.io/component-base/version
KUBE_LDFLAGS="-X $kv.gitVersion=$KUBE_VERSION -X $kv.gitMajor=$kube_major -X $kv.gitMinor=$kube_minor -X $kv.gitTreeState=clean -X $kv.buildDate=1970-01-01T00:00:00Z"
KUBE_LDFLAGS="$KUBE_LDFLAGS -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitMajor=$kube_major -X k8s.io/client-go/pkg/version.gitMinor=$kube_minor"
unset kv kube_major kube_minor
