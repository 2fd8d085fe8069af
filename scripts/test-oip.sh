#!/usr/bin/env bash
# OIP client compatibility suite: builds vp-variant, vp-aggregator and vpctl, starts the shipped family as real
# processes on loopback (`vpctl run` on free ports) and drives both servers with the official Triton
# (`tritonclient.http`) and KServe (`InferenceRESTClient`) clients from their own pinned environment
# (scripts/setup-clients.sh). Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
[ -x .venv/bin/python ] || scripts/setup-python.sh >/dev/null
. scripts/env.sh
venv=$(scripts/setup-clients.sh)
cargo build --quiet --locked -p vp-variant -p vp-aggregator -p vpctl
export VP_BIN_DIR="$CARGO_TARGET_DIR/debug"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/oip "$@"
