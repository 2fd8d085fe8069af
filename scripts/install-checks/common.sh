# shellcheck shell=bash
# What every install check shares: the work folder and the clean-up of everything started (also on
# failure), say/fail, the Python to run helpers with, and building the workspace binaries once.
# Sourced first by scripts/test-install.sh; the other parts use its variables, helpers and clean-up.

. scripts/env.sh || true
chart=charts/vp-operator
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
t0=$(date +%s)
work=$(mktemp -d)
op_pid= run_pid= prom_pid=
cleanup() {
  set +e
  for p in $op_pid $prom_pid $run_pid; do
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p"
      wait "$p" 2>/dev/null
    fi
  done
  VP_CONTROLPLANE_DIR="$work/cp" scripts/controlplane.sh down >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
say() { echo "test-install: $*"; }
# Builds every workspace binary once (dev profile, like scripts/test-rust.sh, so the artefacts are shared).
built=0
build_bins() {
  [ "$built" = 1 ] && return 0
  cargo build --quiet --locked --workspace --bins
  built=1
}
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }

for tool in helm kubectl promtool; do
  command -v "$tool" >/dev/null || fail "$tool is missing (run scripts/setup.sh)"
done
