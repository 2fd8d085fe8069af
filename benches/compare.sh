#!/usr/bin/env bash
# Variant vs model vs class parallelism on an emulated edge site, with failures (benches/compare/compare.py):
# 4 devices (0.25 core each), profiles fast / lan / iot, 1000 test images at 1 and 8 in flight per scheme and
# profile, then 0..3 dead devices (link cut, then SIGKILL) on the lan and iot profiles, the first 500 test
# images per step (16 in flight, 2 s timeout).
# Writes docs/results/compare.json, the two plots docs/results/compare-{latency,failures}.png, and prints the
# markdown tables of docs/benchmarks.md. Extra arguments go to compare.py run (e.g. --requests 200).
# Needs root. Wall time: about 14 minutes on the 2-core development machine (docs/benchmarks.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
[ -x .venv/bin/python ] || scripts/setup-python.sh >/dev/null
cargo build --quiet --release --locked -p vp-variant -p vp-aggregator
start=$(date +%s)
nice .venv/bin/python benches/compare/compare.py run --out docs/results/compare.json \
  --bin-dir "$CARGO_TARGET_DIR/release" "$@"
echo "compare: $(( $(date +%s) - start )) s"
.venv/bin/python benches/compare/report.py docs/results/compare.json --png-dir docs/results
