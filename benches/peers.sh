#!/usr/bin/env bash
# Peer benchmark (issue 14): vp-variant against KServe's Python model server serving the same ONNX model with ONNX
# Runtime (benches/peers/kserve_onnx.py, answering the same top-k outputs), driven by the same official client
# (tritonclient 2.73) over HTTP JSON, HTTP binary and gRPC, on loopback. Not part of CI.
#
# Usage: benches/peers.sh [MODEL_NAME] [OUT.json]   (default: the family's baseline, docs/results/peers.json)
# Needs: scripts/setup.sh run once (release build, datasets). Installs its own Python environment (the pinned OIP
# clients of tests/oip plus the ONNX Runtime the tests use) into $VP_CACHE/venv-peers-<hash>.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
model=${1:-baseline}
out=${2:-docs/results/peers.json}
manifest=models/fmnist/ensemble.yaml
data=${VP_DATA_DIR:-/usr/share/datasets/fashion-mnist}

ort_version=$(sed -n 's/^onnxruntime==//p' models/requirements.txt)
key=$(cat tests/oip/requirements.txt models/requirements.txt "$0" | sha256sum | cut -c1-16)
venv=$VP_CACHE/venv-peers-$key
if [ ! -x "$venv/bin/python" ]; then
  echo "peers: building $venv (tests/oip/requirements.txt + onnxruntime==$ort_version)"
  rm -rf "$venv.tmp"
  python3.11 -m venv "$venv.tmp"
  "$venv.tmp/bin/pip" install -q -r tests/oip/requirements.txt "onnxruntime==$ort_version"
  mv "$venv.tmp" "$venv"
fi

cargo build --release --locked -q -p vp-variant
bin=$CARGO_TARGET_DIR/release/vp-variant
file=$(awk -v m="$model" '$0 ~ "name: "m"$" {f=1} f && /file:/ {print $2; exit}' "$manifest")
[ -n "$file" ] || { echo "peers: no model $model in $manifest" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
vh=$(free_port); vg=$(free_port); kh=$(free_port); kg=$(free_port)
logs=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$logs"; }
trap cleanup EXIT

"$bin" --manifest "$manifest" --variant "$model" --listen "127.0.0.1:$vh" --grpc-listen "127.0.0.1:$vg" \
  --threads 1 >"$logs/variant.log" 2>&1 &
pids+=($!)
"$venv/bin/python" benches/peers/kserve_onnx.py "models/fmnist/$file" "$model" "$kh" "$kg" >"$logs/kserve.log" 2>&1 &
pids+=($!)
for url in "http://127.0.0.1:$vh/v2/health/ready" "http://127.0.0.1:$kh/v2/health/ready"; do
  for _ in $(seq 150); do curl -fsS "$url" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "$url" >/dev/null || { echo "peers: $url not ready"; tail -20 "$logs"/*.log; exit 1; }
done
echo "peers: model $model ($file); machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$venv/bin/python" benches/peers/drive.py "$out" "$data" \
  "vp-variant=http://127.0.0.1:$vh,127.0.0.1:$vg,$model" \
  "kserve=http://127.0.0.1:$kh,127.0.0.1:$kg,$model"
echo "peers: wrote $out; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
