#!/usr/bin/env bash
# OIP client compatibility suite: builds vp-variant, vp-aggregator and vpctl, starts the shipped family as real
# processes on loopback (`vpctl run` on free ports) and drives both servers, over HTTP and gRPC, with the official
# Triton (`tritonclient.http`, `tritonclient.grpc`) and KServe (`InferenceRESTClient`, `InferenceGRPCClient`)
# clients from their own pinned environment (scripts/setup-clients.sh). tritonclient.grpc runs in a second
# pytest process: it and the KServe SDK register the same protobuf names, which one process refuses. Extra
# arguments go to both pytest runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
[ -x .venv/bin/python ] || scripts/setup-python.sh >/dev/null
. scripts/env.sh
venv=$(scripts/setup-clients.sh)
cargo build --quiet --locked -p vp-variant -p vp-aggregator -p vpctl
export VP_BIN_DIR="$CARGO_TARGET_DIR/debug"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/oip --ignore=tests/oip/test_triton_grpc.py "$@"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/oip/test_triton_grpc.py "$@"
