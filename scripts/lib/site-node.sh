#!/usr/bin/env bash
# The "power supply" of one real node of the test site (scripts/site.sh): run inside the node's network
# namespace and a fresh mount namespace of its own, it shadows the host paths that the kubelet, containerd and
# the CNI plugins hard-code, then runs containerd, the kubelet and kube-proxy until one of them stops.
#   site-node.sh NODE_DIR
# NODE_DIR holds containerd.toml, kubelet.yaml, kube-proxy.yaml, the kubeconfigs and env (NODE, NODE_IP, BIN,
# IMAGES: a directory of image tarballs to import).
# Mounts made here (the shadows, the kubelet's volume mounts, containerd's overlay snapshots) live and die with
# this mount namespace: they never reach the host and vanish when the node's last process is gone.
set -euo pipefail
dir=$1
# shellcheck disable=SC1091
. "$dir/env"
export PATH="$BIN:$PATH"

# Nothing mounted here may propagate back to the host.
mount --make-rslave /
# Host paths the components hard-code -- shim sockets (/run/containerd/s), the device-plugin and pod-resources
# sockets (/var/lib/kubelet), the CNI result cache (/var/lib/cni), pod logs (/var/log/pods, /var/log/containers)
# -- are the node's own: /run is a fresh tmpfs (a reboot empties it, as on a real machine), /var/lib and /var/log
# the node's directories. Nothing the node needs from the host lives there.
mkdir -p "$dir/varlib/kubelet" "$dir/varlib/cni" "$dir/log"
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/containerd
mount --bind "$dir/varlib" /var/lib
mount --bind "$dir/log" /var/log
# The kubelet "fixes" kernel tunables it dislikes (vm.overcommit_memory, kernel.panic, ...), which are global to
# the host. Each is shadowed here by a file that already holds the kubelet's value, so the host's stay untouched.
mkdir -p "$dir/sysctl"
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  key=${kv%%=*}
  file="$dir/sysctl/${key//\//.}"
  echo "${kv#*=}" >"$file"
  mount --bind "$file" "/proc/sys/$key"
done

containerd --config "$dir/containerd.toml" >>"$dir/containerd.log" 2>&1 &
for _ in $(seq 1 300); do
  [ -S "$dir/containerd.sock" ] && break
  sleep 0.1
done
[ -S "$dir/containerd.sock" ] || { echo "site-node: containerd did not start; see $dir/containerd.log" >&2; exit 1; }
# The site's images (scripts/build-images.sh) are loaded before the kubelet asks for them, once per node disk.
for tar in "$IMAGES"/*.tar; do
  [ -e "$tar" ] || continue
  mark="$dir/imported-$(basename "$tar")"
  [ -e "$mark" ] && [ ! "$tar" -nt "$mark" ] && continue
  ctr -a "$dir/containerd.sock" -n k8s.io images import "$tar" >>"$dir/import.log" 2>&1 \
    || { echo "site-node: importing $tar failed; see $dir/import.log" >&2; exit 1; }
  touch "$mark"
done
# Like a service manager would, the launcher restarts a kubelet that stopped (scripts/site.sh node
# restart-kubelet); containerd or kube-proxy stopping ends the node.
(
  while true; do
    kubelet --config "$dir/kubelet.yaml" --kubeconfig "$dir/kubelet.kubeconfig" \
      --hostname-override "$NODE" --node-ip "$NODE_IP" --node-labels "$NODE_LABELS" >>"$dir/kubelet.log" 2>&1 || true
    echo "site-node: kubelet stopped; restarting it in 1 s" >>"$dir/kubelet.log"
    sleep 1
  done
) &
kube-proxy --config "$dir/kube-proxy.yaml" --hostname-override "$NODE" >>"$dir/kube-proxy.log" 2>&1 &
wait -n
echo "site-node: a component of $NODE stopped; see $dir/*.log" >&2
exit 1
