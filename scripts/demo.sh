#!/usr/bin/env bash
# The README's demo: sets up the machine, builds the release binaries, runs the local ensemble on models/fmnist
# (`vpctl run`: one process per variant plus the aggregator), classifies one test image, streams the
# Fashion-MNIST test set through the ensemble while killing two variants midway and bringing them back, prints
# the accuracy-vs-available-variants table, and stops everything. Exits non-zero if any request went unanswered.
# Environment: VP_FAMILY_DIR (default models/fmnist), VP_DEMO_SAMPLES (default 10000).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh --runtime
. scripts/env.sh
family=${VP_FAMILY_DIR:-$root/models/fmnist}
samples=${VP_DEMO_SAMPLES:-10000}

echo "== building release binaries (first run on a machine: a few minutes)"
cargo build --release --locked -q -p vpctl -p vp-variant -p vp-aggregator
vpctl="$CARGO_TARGET_DIR/release/vpctl"

state=$(mktemp -d "${TMPDIR:-/tmp}/vp-demo.XXXXXX")
run_pid=
cleanup() {
  if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
    kill -INT "$run_pid" 2>/dev/null || true
    wait "$run_pid" 2>/dev/null || true
  fi
  rm -rf "$state"
}
trap cleanup EXIT

echo "== vpctl run $family/ensemble.yaml"
"$vpctl" run "$family/ensemble.yaml" --state-dir "$state" --port 0 --variant-port 0 --grpc-port 0 --variant-grpc-port 0 >"$state/run.out" 2>&1 &
run_pid=$!
for _ in $(seq 1 600); do
  grep -q "press Ctrl-C" "$state/run.out" 2>/dev/null && break
  kill -0 "$run_pid" 2>/dev/null || { cat "$state/run.out"; echo "demo: vpctl run failed" >&2; exit 1; }
  sleep 0.1
done
grep -q "press Ctrl-C" "$state/run.out" || { cat "$state/run.out"; echo "demo: ensemble not ready in 60 s" >&2; exit 1; }
cat "$state/run.out"

# Variant names in family order, from the running ensemble's state file.
mapfile -t names < <(python3 -c 'import json,sys; [print(v["name"]) for v in json.load(open(sys.argv[1]))["variants"]]' "$state/run.json")
first=${names[0]}
last=${names[${#names[@]}-1]}

echo
echo "== vpctl classify (test image 0, a PNG)"
python3 - "$state/sample.png" <<'PY'
import gzip, struct, sys, zlib
raw = gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").read()[16:16 + 784]
rows = b"".join(b"\x00" + raw[r * 28:(r + 1) * 28] for r in range(28))
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
"$vpctl" classify "$state/sample.png" --state-dir "$state"

echo
echo "== vpctl eval: $samples test samples; kill $first at 30% and $last at 60%, both back at 85%"
"$vpctl" eval --state-dir "$state" --limit "$samples" --concurrency 2 \
  --kill "$first@30%" --kill "$last@60%" --revive "$first@85%" --revive "$last@85%" \
  --min-availability 1

echo
echo "== stopping the ensemble (Ctrl-C)"
kill -INT "$run_pid"
wait "$run_pid"
run_pid=
tail -n 2 "$state/run.out"
