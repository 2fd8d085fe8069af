#!/usr/bin/env bash
# Runs the model toolchain's pytest suite (models/vptrain/tests) in the pinned Python environment: generator,
# exporter parity, the shipped family's manifest and hashes, and a digits smoke run of the whole pipeline.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$root/.venv/bin/python" ] || "$root/scripts/setup-python.sh" >/dev/null
cd "$root/models/vptrain"
exec "$root/.venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
