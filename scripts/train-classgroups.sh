#!/usr/bin/env bash
# Trains the class-parallel comparison models (one sub-model per group of classes plus "other"; see
# models/vptrain/vptrain/classgroups.py), exports them and measures their accuracy; one process, one CPU thread,
# niced, resuming from checkpoints in models/runs/<family>/. Log: models/runs/<family>/build.log
# Usage: scripts/train-classgroups.sh [CONFIG.yaml] [OUT_DIR]
#   (defaults: models/configs/fmnist-cp.yaml, models/<family>)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
config=$(realpath "${1:-$root/models/configs/fmnist-cp.yaml}")
[ -x "$root/.venv/bin/python" ] || "$root/scripts/setup-python.sh" >/dev/null
py="$root/.venv/bin/python"
family=$("$py" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["family"])' "$config")
out=$(realpath -m "${2:-$root/models/$family}")
work="$root/models/runs/$family"
mkdir -p "$work"
cd "$root/models/vptrain"
PYTHONPATH="$root/models/vptrain" nice -n 10 "$py" -m vptrain.classgroups build "$config" --out "$out" \
  --work "$work" 2>&1 | tee -a "$work/build.log"
