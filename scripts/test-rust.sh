#!/usr/bin/env bash
# Rust workspace checks: formatting, clippy with warnings denied, unused dependencies (cargo-machete), the
# dependency policy of deny.toml (cargo-deny: licenses, duplicate versions, sources; advisories only where the
# RustSec database can be fetched), then every unit and integration test. The checkers are installed by
# scripts/setup-rust-tools.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
[ -f Cargo.toml ] && ls crates/*/Cargo.toml >/dev/null 2>&1 || { echo "test-rust: no crates yet"; exit 0; }
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
for tool in cargo-machete cargo-deny; do
  command -v "$tool" >/dev/null || { echo "test-rust: $tool is missing (run scripts/setup.sh)" >&2; exit 1; }
done
cargo machete
cargo deny --locked check licenses bans sources
# The advisory database is a git repository cargo-deny clones; where it cannot be fetched (this project's
# machines reach package registries only) the check is skipped and says so.
if timeout 30 cargo deny fetch db >/dev/null 2>&1; then
  cargo deny --locked check advisories
else
  echo "test-rust: cargo deny check advisories skipped: the RustSec advisory database cannot be fetched here" >&2
fi
cargo test --workspace --locked
