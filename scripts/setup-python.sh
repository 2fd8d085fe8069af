#!/usr/bin/env bash
# Creates (or reuses) the pinned Python environment and links it as .venv.
# The environment lives in a cache folder keyed by the hash of models/requirements.txt, so a second run on the
# same machine takes seconds; a fresh machine builds it from PyPI (torch is large: a few minutes).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${VP_CACHE:-$HOME/.cache/variant-parallel}
key=$(sha256sum "$root/models/requirements.txt" | cut -c1-16)
venv="$cache/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "setup-python: building $venv (first run on this machine)" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet -r "$root/models/requirements.txt"
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$root/.venv"
echo "$venv"
