#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine (idempotent; fast when already done):
# Debian packages, the pinned Python environment (.venv), and any part-specific set-up (scripts/setup-*.sh).
#   scripts/setup.sh            everything (what the tests need: also the test control plane, helm, promtool)
#   scripts/setup.sh --runtime  only what running the ensemble needs (data set, Python env with ONNX Runtime)
set -euo pipefail
runtime_only=0
[ "${1:-}" = "--runtime" ] && runtime_only=1
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
scripts/setup-python.sh >/dev/null
[ "$runtime_only" = 1 ] && exit 0
for part in scripts/setup-*.sh; do
  case "$part" in scripts/setup-python.sh) continue ;; esac
  bash "$part"
done
