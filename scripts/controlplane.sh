#!/usr/bin/env bash
# Starts and stops a test control plane for manual use (kubectl, helm, running tests against it):
#   scripts/controlplane.sh up [--nodes N] [extra vp-controlplane up flags]   start in the background, wait until ready
#   scripts/controlplane.sh down                                              stop it (whole process group) and delete its data
#   scripts/controlplane.sh status                                            print its state (URLs, kubeconfig)
#   scripts/controlplane.sh node list|add|kill|partition|revive|remove [NAME] [--label k=v ...]
#   scripts/controlplane.sh env                                               print export lines (KUBECONFIG, VP_TESTENV_DATA_DIR)
# Its directory is $VP_CONTROLPLANE_DIR (default $VP_CACHE/controlplane-run): data/ (etcd, certificates,
# data/kubeconfig, data/state.json), controlplane.log and pid. Build it first with scripts/setup-controlplane.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# env.sh may return non-zero when no ONNX Runtime library is found; only its exports matter here.
. "$root/scripts/env.sh" || true
dir=${VP_CONTROLPLANE_DIR:-$VP_CACHE/controlplane-run}
bin=${VP_CONTROLPLANE_BIN:-$VP_CACHE/bin/vp-controlplane}
data="$dir/data"

running() { [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

need_bin() {
  [ -x "$bin" ] || { echo "controlplane: $bin is missing: run scripts/setup.sh (or scripts/setup-controlplane.sh)" >&2; exit 1; }
}

up() {
  need_bin
  if running; then
    echo "controlplane: already running (pid $(cat "$dir/pid")); KUBECONFIG=$data/kubeconfig" >&2
    return 0
  fi
  rm -rf "$data" "$dir/pid"
  mkdir -p "$dir"
  # setsid: its own session and process group, so `down` can stop everything it started.
  setsid "$bin" up --data-dir "$data" "$@" >"$dir/controlplane.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  for _ in $(seq 1 2400); do
    if [ -f "$data/state.json" ]; then
      echo "controlplane: ready; export KUBECONFIG=$data/kubeconfig (log: $dir/controlplane.log)" >&2
      return 0
    fi
    if ! running; then
      echo "controlplane: failed to start; last lines of $dir/controlplane.log:" >&2
      tail -n 30 "$dir/controlplane.log" >&2
      rm -f "$dir/pid"
      return 1
    fi
    sleep 0.1
  done
  echo "controlplane: not ready after 240 s; stopping it" >&2
  down
  return 1
}

down() {
  if running; then
    pid=$(cat "$dir/pid")
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "controlplane: did not stop within 30 s; killing it" >&2
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    echo "controlplane: stopped" >&2
  fi
  rm -rf "$data" "$dir/pid"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  up) up "$@" ;;
  down) down ;;
  status) need_bin; "$bin" state --data-dir "$data" ;;
  node) need_bin; "$bin" node --data-dir "$data" "$@" ;;
  env) echo "export KUBECONFIG=$data/kubeconfig VP_TESTENV_DATA_DIR=$data" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
