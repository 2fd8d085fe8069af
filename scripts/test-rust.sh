#!/usr/bin/env bash
# Rust workspace checks: formatting, clippy with warnings denied, then every unit and integration test.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
[ -f Cargo.toml ] && ls crates/*/Cargo.toml >/dev/null 2>&1 || { echo "test-rust: no crates yet"; exit 0; }
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
