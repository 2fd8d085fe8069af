# Network namespaces for an isolated test site: one namespace per member (a node, the control plane, a
# client...), all joined by one Linux bridge that itself lives in a "switch" namespace. Nothing is created in the
# host's network namespace (veth pairs are made directly inside the site's namespaces) and no member gets a
# default route, so no packet of the site can reach the host's uplink; the host's iptables and sysctls are not
# touched (forwarding and rules are per namespace).
#
#   netns_site_up SITE                    create SITE-sw with the bridge br0 (idempotent)
#   netns_member_add SITE NAME ADDR/LEN   create SITE-NAME with eth0 = ADDR/LEN on the bridge, lo up, forwarding on
#   netns_route_add SITE NAME DEST VIA    a route inside SITE-NAME (DEST: a CIDR; VIA: an address or "dev eth0")
#   netns_link SITE NAME up|down          the member's cable: down cuts it off the bridge (both ends)
#   netns_exec SITE NAME CMD...           run CMD in SITE-NAME's network namespace only (not its mount namespace,
#                                         unlike `ip netns exec`), so mounts made by CMD stay visible to others
#   netns_members SITE                    names of the site's namespaces (SITE-*), one a line
#   netns_site_down SITE                  kill every process left in the site's namespaces and delete them all
#                                         (idempotent; finds leftovers of a crashed run by their name prefix)
# Later tools (an emulated edge network) can add tc qdiscs on the bridge ports, named after the members.
# shellcheck shell=bash

netns_site_up() {
  local site=$1 sw="$1-sw"
  ip netns list | grep -qx "$sw\( (id: [0-9]*)\)\{0,1\}" || ip netns add "$sw"
  ip -n "$sw" link set lo up
  ip -n "$sw" link show br0 >/dev/null 2>&1 || ip -n "$sw" link add br0 type bridge
  ip -n "$sw" link set br0 up
  # Without an address the switch namespace routes nothing: it only bridges.
  true "$site"
}

# Bridge port names are the member names (<= 15 characters).
netns_member_add() {
  local site=$1 name=$2 addr=$3 ns="$1-$2" sw="$1-sw"
  [ ${#name} -le 15 ] || { echo "netns: member name $name is longer than 15 characters" >&2; return 1; }
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$sw" link add name "$name" type veth peer name eth0 netns "$ns"
  ip -n "$sw" link set dev "$name" master br0 up
  ip -n "$ns" addr add "$addr" dev eth0
  ip -n "$ns" link set eth0 up
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
}

netns_route_add() {
  local ns="$1-$2" dest=$3
  shift 3
  case "$1" in
    dev) ip -n "$ns" route replace "$dest" dev "$2" ;;
    *) ip -n "$ns" route replace "$dest" via "$1" ;;
  esac
}

netns_link() {
  local site=$1 name=$2 state=$3
  ip -n "$site-sw" link set dev "$name" "$state"
  ip -n "$site-$name" link set eth0 "$state"
}

netns_exec() {
  local ns="$1-$2"
  shift 2
  nsenter --net="/run/netns/$ns" -- "$@"
}

netns_members() {
  ip netns list | awk -v p="$1-" 'index($1, p) == 1 { print $1 }'
}

netns_site_down() {
  local site=$1 ns pids
  for ns in $(netns_members "$site"); do
    for _ in 1 2 3 4 5; do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -z "$pids" ] && break
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true
      sleep 0.2
    done
    ip netns del "$ns" 2>/dev/null || true
  done
}
