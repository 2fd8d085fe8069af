#!/usr/bin/env bash
# Installs the Rust dependency checkers that scripts/test-rust.sh runs: cargo-machete (unused dependencies) and
# cargo-deny (licenses, duplicate versions, sources; deny.toml), from crates.io with `cargo install --locked`,
# into $VP_CACHE/bin. Idempotent: each tool is cached under its pinned version, so a second run takes well under
# a second. Cold costs (docs/testing.md): cargo-machete ~1 min, cargo-deny ~6 min on an idle 2-core machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# env.sh may return non-zero when no ONNX Runtime library is found; only its exports matter here.
. "$root/scripts/env.sh" || true
bin="$VP_CACHE/bin"
mkdir -p "$bin"

install_tool() {
  local crate=$1 version=$2
  local dir="$VP_CACHE/rust-tools/$crate-$version"
  if [ ! -x "$dir/bin/$crate" ]; then
    echo "setup-rust-tools: building $crate $version from crates.io (first run on this machine)" >&2
    local began
    began=$(date +%s)
    rm -rf "$dir.tmp"
    # A private target folder (removed afterwards): the workspace's CARGO_TARGET_DIR stays the project's.
    CARGO_TARGET_DIR="$dir.target" nice -n 10 cargo install --quiet --locked --root "$dir.tmp" "$crate@$version"
    rm -rf "$dir.target" "$dir"
    mv "$dir.tmp" "$dir"
    echo "setup-rust-tools: built $crate $version in $(( $(date +%s) - began )) s" >&2
    # Other versions are not needed any more.
    find "$VP_CACHE/rust-tools" -mindepth 1 -maxdepth 1 -type d -name "$crate-*" ! -name "$crate-$version" -exec rm -rf {} +
  fi
  ln -sfn "$dir/bin/$crate" "$bin/$crate"
}

install_tool cargo-machete 0.9.2
install_tool cargo-deny 0.20.2
