#!/usr/bin/env bash
# Creates (or reuses) the small pinned Python environment of the OIP client compatibility suite: Triton's
# `tritonclient[http]` and the KServe SDK (tests/oip/requirements.txt; no torch). It lives in a cache folder keyed
# by the hash of that file, apart from the model toolchain's environment, so changing one never rebuilds the other.
# Prints the environment's folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${VP_CACHE:-$HOME/.cache/variant-parallel}
req="$root/tests/oip/requirements.txt"
key=$(sha256sum "$req" | cut -c1-16)
venv="$cache/venv-clients-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "setup-clients: building $venv (first run on this machine)" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet -r "$req"
  touch "$venv/.complete"
fi
echo "$venv"
