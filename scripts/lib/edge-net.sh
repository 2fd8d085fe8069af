# An emulated edge site on top of netns.sh and cgroup.sh: a gateway and N devices on one bridge, every device's
# link shaped with tc (netem rate, delay, loss where the kernel has netem, else tbf rate only; both directions:
# the device's eth0 and its bridge port), every device's processes in a cgroup with a CPU quota. Nothing is
# created in the host's network namespace; no member has a default route.
#
#   edge_site_up SITE N PROFILE CPU   gateway SITE-gw = 10.77.0.1/24, devices SITE-d0.. = 10.77.0.10+i/24;
#                                     PROFILE: fast | lan | iot (edge_profile); CPU: share of one core per device
#                                     (e.g. 0.25; "none" for no quota)
#   edge_profile PROFILE              the qdisc of a profile (empty: no shaping): netem where the kernel has it,
#                                     else tbf with the same rate (no delay, no loss)
#   edge_addr SITE MEMBER             a member's address (gw, d0, d1, ...)
#   edge_spawn SITE MEMBER LOG CMD... start CMD in the member's namespace (and a device's cgroup), in the
#                                     background, output to LOG; prints its pid
#   edge_link SITE MEMBER up|down     plug or cut a member's cable (netns_link)
#   edge_counters SITE                bytes and packets each bridge port received and sent, as JSON
#                                     {"d0": {"rx_bytes": .., "tx_bytes": .., "rx_packets": .., "tx_packets": ..}}
#                                     (a port's rx is what the member sent onto the wire)
#   edge_site_down SITE               kill everything in the site, delete its namespaces (veths and qdiscs go with
#                                     them) and its cgroups; idempotent
#   edge_cleanup_stale PREFIX         edge_site_down for every site named PREFIX<pid> whose pid is not running
#                                     (leftovers of a run killed with SIGKILL)
# Site names: at most 10 characters (namespace names are SITE-MEMBER). Needs root.
# shellcheck shell=bash

_edge_lib=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=netns.sh
. "$_edge_lib/netns.sh"
# shellcheck source=cgroup.sh
. "$_edge_lib/cgroup.sh"

EDGE_SUBNET=10.77.0
EDGE_CGROUP=vp-edge

# The qdisc of a profile: netem (rate, delay, loss) when the kernel has it, else tbf (rate only: delay and loss are
# then NOT emulated; `tc -n SITE-d0 qdisc show` tells which one a site got).
edge_profile() {
  local netem=1
  edge_has_netem || netem=
  case "$1" in
    fast) echo "" ;;                                      # plain veth: loopback-like, no shaping
    lan) if [ -n "$netem" ]; then echo "netem delay 1ms rate 100mbit limit 1000"
         else echo "tbf rate 100mbit burst 12500 latency 100ms"; fi ;;
    iot) if [ -n "$netem" ]; then echo "netem delay 5ms rate 10mbit loss 0.5% limit 1000"
         else echo "tbf rate 10mbit burst 3200 latency 200ms"; fi ;;
    *) echo "edge: unknown profile $1 (fast, lan, iot)" >&2; return 1 ;;
  esac
}

# Whether the kernel has sch_netem (tried on the loopback of a throw-away namespace; cached).
edge_has_netem() {
  if [ -z "${EDGE_NETEM:-}" ]; then
    local ns="edge-probe-$$"
    EDGE_NETEM=no
    ip netns add "$ns" && ip netns exec "$ns" tc qdisc add dev lo root netem delay 1ms 2>/dev/null && EDGE_NETEM=yes
    ip netns del "$ns" 2>/dev/null || true
  fi
  [ "$EDGE_NETEM" = yes ]
}

edge_addr() {
  case "$2" in
    gw) echo "$EDGE_SUBNET.1" ;;
    d[0-9]*) echo "$EDGE_SUBNET.$((10 + ${2#d}))" ;;
    *) echo "edge: unknown member $2" >&2; return 1 ;;
  esac
}

edge_site_up() {
  local site=$1 n=$2 profile=$3 cpu=$4 netem i name quota
  [ ${#site} -le 10 ] || { echo "edge: site name $site is longer than 10 characters" >&2; return 1; }
  netem=$(edge_profile "$profile") || return 1
  netns_site_up "$site"
  netns_member_add "$site" gw "$(edge_addr "$site" gw)/24"
  for i in $(seq 0 $((n - 1))); do
    name=d$i
    netns_member_add "$site" "$name" "$(edge_addr "$site" "$name")/24"
    if [ -n "$netem" ]; then
      # shellcheck disable=SC2086
      tc -n "$site-$name" qdisc add dev eth0 root $netem
      # shellcheck disable=SC2086
      tc -n "$site-sw" qdisc add dev "$name" root $netem
    fi
    cg_create "$EDGE_CGROUP/$site/$name"
    if [ "$cpu" != none ]; then
      quota=$(awk -v c="$cpu" 'BEGIN { printf "%d", c * 100000 }')
      local h
      for h in $(cg_hierarchies); do
        if [ -e "$h/$EDGE_CGROUP/$site/$name/cpu.cfs_quota_us" ]; then
          echo 100000 >"$h/$EDGE_CGROUP/$site/$name/cpu.cfs_period_us"
          echo "$quota" >"$h/$EDGE_CGROUP/$site/$name/cpu.cfs_quota_us"
        elif [ -e "$h/$EDGE_CGROUP/$site/$name/cpu.max" ]; then
          echo "$quota 100000" >"$h/$EDGE_CGROUP/$site/$name/cpu.max"
        fi
      done
    fi
  done
  cg_create "$EDGE_CGROUP/$site/gw"
}

edge_spawn() {
  local site=$1 member=$2 log=$3
  shift 3
  (
    cg_join "$EDGE_CGROUP/$site/$member" "$BASHPID"
    exec nsenter --net="/run/netns/$site-$member" -- "$@"
  ) >"$log" 2>&1 </dev/null &
  echo $!
}

edge_link() {
  netns_link "$1" "$2" "$3"
}

edge_counters() {
  local site=$1
  ip -n "$site-sw" -s -j link show type veth | python3 -c '
import json, sys
out = {}
for link in json.load(sys.stdin):
    s = link.get("stats64", {})
    out[link["ifname"]] = {"rx_bytes": s["rx"]["bytes"], "tx_bytes": s["tx"]["bytes"],
                           "rx_packets": s["rx"]["packets"], "tx_packets": s["tx"]["packets"]}
print(json.dumps(out))'
}

edge_site_down() {
  local site=$1
  local h
  netns_site_down "$site"
  cg_remove "$EDGE_CGROUP/$site"
  for h in $(cg_hierarchies); do
    rmdir "$h/$EDGE_CGROUP" 2>/dev/null || true  # only when no other site is left
  done
  return 0
}

edge_cleanup_stale() {
  local prefix=$1 site pid h
  for site in $(ip netns list | awk '{ print $1 }' | sed -n "s/^\($prefix[0-9][0-9]*\)-.*/\1/p" | sort -u); do
    pid=${site#"$prefix"}
    kill -0 "$pid" 2>/dev/null || edge_site_down "$site"
  done
  for h in $(cg_hierarchies); do
    for site in "$h/$EDGE_CGROUP/$prefix"*; do
      [ -d "$site" ] || continue
      pid=${site##*/}
      pid=${pid#"$prefix"}
      kill -0 "$pid" 2>/dev/null || edge_site_down "${site##*/}"
    done
  done
  return 0
}
