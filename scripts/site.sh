#!/usr/bin/env bash
# A test site with real nodes, isolated in network namespaces: the test control plane (scripts/controlplane.sh's
# binary), cluster DNS (CoreDNS) and a client namespace "cp", and N nodes each running containerd + runc, the
# kubelet and kube-proxy, all joined by one bridge with no route to the host's uplink (scripts/lib/netns.sh).
#   scripts/site.sh up [--nodes N]          start the site (default 3 nodes), wait until every node is Ready
#   scripts/site.sh down                    stop everything and remove every trace (also after a crash/kill -9)
#   scripts/site.sh node off NAME           power loss: freeze and kill the node's daemons, shims and containers
#   scripts/site.sh node on NAME            power back on (containerd state and images survive, as on a disk)
#   scripts/site.sh node cut|mend NAME      unplug / replug the node's network cable
#   scripts/site.sh node restart-kubelet NAME   kill the kubelet only; the node's launcher brings it back
#   scripts/site.sh run CMD...              run CMD inside the site (cp namespace) with KUBECONFIG set
#   scripts/site.sh env                     print export lines (KUBECONFIG, VP_SITE_DIR)
# Site addresses: 10.77.0.0/24 (cp .2, node i .(10+i)), pods 10.78.i.0/24 on node i, Services 10.96.0.0/16,
# cluster DNS at 10.77.0.2. Images: every *.tar in $VP_SITE_IMAGES (default $VP_CACHE/images/current, written by
# scripts/build-images.sh) is imported into each node's containerd when the node starts. Build the binaries first: scripts/setup.sh (setup-nodes.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# env.sh may return non-zero when no ONNX Runtime library is found; only its exports matter here.
. "$root/scripts/env.sh" || true
. "$root/scripts/lib/netns.sh"
. "$root/scripts/lib/cgroup.sh"
site=${VP_SITE:-vpsite}
dir=${VP_SITE_DIR:-$VP_CACHE/site-run}
bin="$VP_CACHE/bin"
cp_bin=${VP_CONTROLPLANE_BIN:-$bin/vp-controlplane}
net=10.77.0
cp_ip=$net.2
api_port=6443
pod_net=10.78
kubeconfig="$dir/cp/data/kubeconfig"
images=${VP_SITE_IMAGES:-$VP_CACHE/images/current}

node_ip() { echo "$net.$((10 + ${1#n}))"; }
node_index() { echo "${1#n}"; }

need() {
  local f
  [ -x "$cp_bin" ] || { echo "site: $cp_bin is missing: run scripts/setup.sh (scripts/setup-controlplane.sh)" >&2; exit 1; }
  for f in containerd ctr containerd-shim-runc-v2 kubelet kube-proxy coredns; do
    [ -x "$bin/$f" ] || { echo "site: $bin/$f is missing: run scripts/setup.sh (scripts/setup-nodes.sh)" >&2; exit 1; }
  done
}

kubectl_site() { KUBECONFIG="$kubeconfig" netns_exec "$site" cp kubectl "$@"; }

# start_member NAME LOG CMD...: run CMD in the member's network namespace and control group, detached.
start_member() {
  local name=$1 log=$2
  shift 2
  cg_create "$site/$name"
  # The child joins the control group before it execs, so everything it ever starts is inside.
  (
    cg_join "$site/$name" "$BASHPID"
    exec setsid nsenter --net="/run/netns/$site-$name" -- "$@" >>"$log" 2>&1 </dev/null
  ) &
}

wait_for() {
  local what=$1 tries=$2
  shift 2
  for _ in $(seq 1 "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "site: timed out waiting for $what" >&2
  return 1
}

write_node_config() {
  local name=$1 n i ip d
  i=$(node_index "$name")
  ip=$(node_ip "$name")
  d="$dir/nodes/$name"
  mkdir -p "$d/cni-conf" "$d/containerd-root" "$d/runc"
  cat >"$d/env" <<EOF
NODE=$name
NODE_IP=$ip
NODE_LABELS=vp.dev/site=$site
BIN=$bin
IMAGES=$images
EOF
  cat >"$d/containerd.toml" <<EOF
version = 3
root = "$d/containerd-root"
state = "/run/containerd/state"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs", "io.containerd.internal.v1.opt"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[plugins.'io.containerd.cri.v1.runtime']
  # No CAP_SYS_RESOURCE in a VM like the CI's: runc must not raise oom_score_adj above the daemon's.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["/usr/lib/cni"]
  conf_dir = "$d/cni-conf"
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = "$(command -v runc)"
  Root = "$d/runc"
  SystemdCgroup = false
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "localhost/vp-pause:site"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
EOF
  cat >"$d/cni-conf/10-site.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "site",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$d/cni-ipam", "ranges": [[{"subnet": "$pod_net.$i.0/24"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  : >"$d/resolv.conf"
  cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 hosts (like this CI's): the kubelet only warns with failCgroupV1 false.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: true
# Every container of this node under one control group, so that powering the node off can kill them all (with
# cgroupsPerQOS false the kubelet passes no cgroup parent and containerd puts containers in /k8s.io/<id>).
cgroupRoot: /$site/$name
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix://$d/containerd.sock
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
# The site's own network only: anonymous access, reachable from inside the site's namespaces alone.
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDNS: [$cp_ip]
clusterDomain: cluster.local
resolvConf: $d/resolv.conf
failSwapOn: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
podLogsDir: /var/log/pods
EOF
  kube_proxy_config "$ip" "$d/kube-proxy.yaml"
}

# kube_proxy_config BIND_ADDRESS OUT: the KubeProxyConfiguration of one member (a node, or the cp namespace).
kube_proxy_config() {
  cat >"$2" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
bindAddress: $1
clusterCIDR: $pod_net.0.0/16
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Without br_netfilter, traffic from a pod to a Service whose endpoint is on the same bridge would come back
# unNATed; masquerading every Service connection avoids that.
iptables: {masqueradeAll: true}
# conntrack limits are global to the host: leave them as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

add_routes() {
  local member=$1 nodes=$2 j
  for j in $(seq 1 "$nodes"); do
    [ "$member" = "n$j" ] && continue
    netns_route_add "$site" "$member" "$pod_net.$j.0/24" "$(node_ip "n$j")"
  done
  # Service addresses exist only in kube-proxy's rules; a route makes local clients send them out at all.
  netns_route_add "$site" "$member" 10.96.0.0/16 dev eth0
}

node_on() {
  local name=$1
  start_member "$name" "$dir/nodes/$name/launcher.log" unshare --mount --propagation slave \
    bash "$root/scripts/lib/site-node.sh" "$dir/nodes/$name"
}

up() {
  need
  local nodes=3
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes) nodes=$2; shift 2 ;;
      *) echo "site: unknown option $1" >&2; exit 2 ;;
    esac
  done
  if [ -f "$dir/up" ]; then
    echo "site: already up ($dir); run scripts/site.sh down first" >&2
    return 1
  fi
  down_quiet
  mkdir -p "$dir/cp" "$dir/nodes"
  echo "$nodes" >"$dir/nodes/count"
  local began
  began=$(date +%s)
  netns_site_up "$site"
  netns_member_add "$site" cp "$cp_ip/24"
  add_routes cp "$nodes"
  start_member cp "$dir/cp/controlplane.log" "$cp_bin" up --data-dir "$dir/cp/data" \
    --address "$cp_ip" --port "$api_port" "${VP_SITE_CONTROLPLANE_ARGS[@]}"
  wait_for "the control plane" 2400 test -f "$dir/cp/data/state.json" \
    || { tail -n 30 "$dir/cp/controlplane.log" >&2; return 1; }
  "$cp_bin" kubeconfig --data-dir "$dir/cp/data" --user system:kube-proxy --out "$dir/kube-proxy.kubeconfig"
  cat >"$dir/cp/Corefile" <<EOF
.:53 {
  bind $cp_ip
  errors
  kubernetes cluster.local in-addr.arpa ip6.arpa {
    kubeconfig $kubeconfig vp-test
    pods insecure
    fallthrough in-addr.arpa ip6.arpa
  }
  cache 5
}
EOF
  # kube-proxy in the cp namespace too, so that clients there (kubectl's peers: vpctl, Prometheus) reach
  # ClusterIP Services as pods do.
  kube_proxy_config "$cp_ip" "$dir/cp/kube-proxy.yaml"
  start_member cp "$dir/cp/coredns.log" "$bin/coredns" -conf "$dir/cp/Corefile"
  # Its own mount namespace with a fresh /run, so that iptables' lock file stays out of the host's /run.
  start_member cp "$dir/cp/kube-proxy.log" unshare --mount --propagation slave \
    bash -c 'mount -t tmpfs tmpfs /run && exec "$@"' _ "$bin/kube-proxy" --config "$dir/cp/kube-proxy.yaml" \
    --hostname-override "$site-cp"
  local i name
  for i in $(seq 1 "$nodes"); do
    name=n$i
    netns_member_add "$site" "$name" "$(node_ip "$name")/24"
    add_routes "$name" "$nodes"
    write_node_config "$name"
    "$cp_bin" kubeconfig --data-dir "$dir/cp/data" --user "system:node:$name" --group system:nodes \
      --out "$dir/nodes/$name/kubelet.kubeconfig"
    node_on "$name"
  done
  touch "$dir/up"
  wait_for "$nodes Ready nodes" 600 nodes_ready "$nodes" || { kubectl_site get nodes -o wide >&2 || true; return 1; }
  echo "site: up in $(( $(date +%s) - began )) s: $nodes nodes; scripts/site.sh run kubectl get nodes" >&2
}

nodes_ready() {
  local want=$1 got
  got=$(kubectl_site get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
  [ "$got" -ge "$want" ]
}

# Removes everything a site (this one or a crashed earlier one) may have left: processes (by control group and
# by network namespace), namespaces, control groups, files.
down_quiet() {
  cg_remove "$site"
  netns_site_down "$site"
  rm -rf "$dir"
}

down() {
  down_quiet
  echo "site: down" >&2
}

# Plugs a member's cable back in; the kernel dropped the routes through it when the link went down.
plug() {
  netns_link "$site" "$1" up
  add_routes "$1" "$(cat "$dir/nodes/count")"
}

node_cmd() {
  local verb=${1:-} name=${2:-}
  [ -n "$name" ] && [ -d "$dir/nodes/$name" ] || { echo "site: node $verb NAME: no node ${name:-(none)} in $dir/nodes" >&2; exit 2; }
  case "$verb" in
    # A machine without power answers nothing: its cable goes dead too (else its kernel would still reset
    # connections to it, which a real outage never does).
    off) netns_link "$site" "$name" down; cg_kill "$site/$name" ;;
    on) plug "$name"; node_on "$name" ;;
    cut) netns_link "$site" "$name" down ;;
    mend) plug "$name" ;;
    restart-kubelet) pkill_in_group "$site/$name" kubelet ;;
    *) echo "site: node off|on|cut|mend|restart-kubelet NAME" >&2; exit 2 ;;
  esac
}

# Kills the processes named COMM in GROUP (by pid, read from the control group).
pkill_in_group() {
  local group=$1 comm=$2 h pid
  h=$(cg_hierarchies | head -n 1)
  for pid in $(cg_procs "$h/$group"); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] && kill -TERM "$pid" 2>/dev/null || true
  done
}

VP_SITE_CONTROLPLANE_ARGS=()
# Sourced (by tests of its parts) it only defines the functions.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0
cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  up) up "$@" ;;
  down) down ;;
  node) node_cmd "$@" ;;
  run) KUBECONFIG="$kubeconfig" netns_exec "$site" cp "$@" ;;
  env) echo "export KUBECONFIG=$kubeconfig VP_SITE_DIR=$dir" ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
