#!/usr/bin/env bash
# Checks that crds/ is what the code generates: regenerates the CRDs into a temporary folder with the `crdgen`
# binary of crates/vp-api and fails on any difference (fix: `cargo run -p vp-api --bin crdgen -- crds`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run --quiet --locked -p vp-api --bin crdgen -- "$tmp" >/dev/null
if ! diff -ru crds "$tmp"; then
  echo "test-crds: crds/ is stale; run: cargo run -p vp-api --bin crdgen -- crds" >&2
  exit 1
fi
echo "test-crds: crds/ matches the generated CRDs ($(ls "$tmp" | wc -l) file(s))"
