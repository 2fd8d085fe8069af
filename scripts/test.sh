#!/usr/bin/env bash
# Runs every test suite of the project on a fresh or warm machine: installs what is missing, then the model
# toolchain's pytest suite, the Rust workspace (fmt, clippy, unit and integration tests) and the control-plane
# tests. Exits non-zero if any part fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
for part in scripts/test-*.sh; do
  [ -e "$part" ] || continue
  echo "=== $part"
  bash "$part"
done
