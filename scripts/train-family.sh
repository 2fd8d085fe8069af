#!/usr/bin/env bash
# Regenerates a variant family from its config: trains the variants (jointly, or one after the other when they are
# trained independently) and the baseline (two concurrent
# processes, one CPU thread each; both resume from checkpoints in models/runs/<family>/), then exports ONNX,
# evaluates with ONNX Runtime and writes ensemble.yaml. Logs: models/runs/<family>/{variants,baseline,build}.log
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
export PYTHONPATH="$root/models/vptrain"
distill=$("$py" -c 'import sys, yaml; print(float((yaml.safe_load(open(sys.argv[1])).get("training") or {}).get("distill_weight", 0)) > 0)' "$config")
train_part() { nice -n 10 "$py" -m vptrain train "$config" --part "$1" --work "$work" >> "$work/$1.log" 2>&1; }
fail() { echo "training failed; see $work/variants.log and $work/baseline.log (rerun to resume)" >&2; exit 1; }
if [ "$distill" = True ]; then
  # Distillation needs the trained baseline as the teacher: one after the other.
  train_part baseline || fail
  train_part variants || fail
else
  train_part variants & v=$!
  train_part baseline & b=$!
  status=0
  wait $v || status=1
  wait $b || status=1
  [ $status -eq 0 ] || fail
fi
nice -n 10 "$py" -m vptrain build "$config" --out "$out" --work "$work" 2>&1 | tee "$work/build.log"
