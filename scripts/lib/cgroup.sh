# Control groups (v1 hierarchies under /sys/fs/cgroup, or a cgroup v2 tree) that hold every process of one member
# of a test site -- its daemons, the shims they start, and, through the kubelet's cgroupRoot, every container --
# so that the member can be powered off at once (freeze, kill all, thaw) and nothing survives a `down`, even
# processes that left their namespace or process group.
#
#   cg_create GROUP          create GROUP (e.g. vpsite/n1) in every hierarchy (cpuset inherits cpus and mems)
#   cg_join GROUP PID        move PID into GROUP in every hierarchy
#   cg_kill GROUP            freeze GROUP, SIGKILL every process in it and below, thaw; returns when empty
#   cg_remove GROUP          cg_kill, then remove GROUP and all groups below it (deepest first)
#   cg_hierarchies           the mounted hierarchies, one directory a line
# shellcheck shell=bash

cg_hierarchies() {
  local d
  for d in /sys/fs/cgroup/*/; do
    d=${d%/}
    # The empty v2 hierarchy that systemd mounts next to v1 ones holds no controllers; skip it.
    [ "$(basename "$d")" = unified ] && continue
    [ -e "$d/cgroup.procs" ] && echo "$d"
  done
  # Pure cgroup v2: one tree.
  [ -e /sys/fs/cgroup/cgroup.controllers ] && echo /sys/fs/cgroup
  return 0
}

cg_create() {
  local group=$1 h path part sub
  for h in $(cg_hierarchies); do
    path=$h
    sub=
    for part in ${group//\// }; do
      sub="$sub/$part"
      path="$h$sub"
      [ -d "$path" ] && continue
      mkdir "$path"
      if [ -e "$path/cpuset.cpus" ]; then
        cat "$(dirname "$path")/cpuset.cpus" >"$path/cpuset.cpus"
        cat "$(dirname "$path")/cpuset.mems" >"$path/cpuset.mems"
      fi
    done
  done
}

cg_join() {
  local group=$1 pid=$2 h
  for h in $(cg_hierarchies); do
    echo "$pid" >"$h/$group/cgroup.procs"
  done
}

# Every process in GROUP or below, from the hierarchy given.
cg_procs() {
  local dir=$1
  [ -d "$dir" ] || return 0
  find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u
}

cg_kill() {
  local group=$1 h freezer= pids
  for h in $(cg_hierarchies); do
    if [ -e "$h/$group/freezer.state" ]; then freezer="$h/$group"; fi
  done
  # Frozen processes cannot fork or react while they are being killed; SIGKILL still ends them once thawed.
  [ -n "$freezer" ] && echo FROZEN >"$freezer/freezer.state" 2>/dev/null || true
  for _ in $(seq 1 100); do
    pids=
    for h in $(cg_hierarchies); do
      pids="$pids $(cg_procs "$h/$group")"
    done
    pids=$(echo "$pids" | tr ' ' '\n' | sort -u | tr '\n' ' ')
    if [ -z "${pids// /}" ]; then
      break
    fi
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    [ -n "$freezer" ] && echo THAWED >"$freezer/freezer.state" 2>/dev/null || true
    sleep 0.1
  done
  [ -n "$freezer" ] && echo THAWED >"$freezer/freezer.state" 2>/dev/null || true
  return 0
}

cg_remove() {
  local group=$1 h
  cg_kill "$group"
  for h in $(cg_hierarchies); do
    [ -d "$h/$group" ] || continue
    find "$h/$group" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  return 0
}
