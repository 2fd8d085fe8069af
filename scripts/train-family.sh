#!/usr/bin/env bash
# Regenerates a variant family from its config: trains the variants jointly and the baseline (resuming from
# checkpoints in models/runs/<family>/), exports ONNX, evaluates with ONNX Runtime and writes ensemble.yaml.
# Usage: scripts/train-family.sh models/configs/fmnist.yaml [OUT_DIR]   (OUT_DIR defaults to models/<family>)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 CONFIG.yaml [OUT_DIR]" >&2; exit 2; }
config=$(realpath "$1")
[ -x "$root/.venv/bin/python" ] || "$root/scripts/setup-python.sh" >/dev/null
py="$root/.venv/bin/python"
family=$(PYTHONPATH="$root/models/vptrain" "$py" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["family"])' "$config")
out=$(realpath -m "${2:-$root/models/$family}")
work="$root/models/runs/$family"
mkdir -p "$work"
cd "$root/models/vptrain"
PYTHONPATH="$root/models/vptrain" exec nice -n 10 "$py" -m vptrain build "$config" --out "$out" --work "$work"
