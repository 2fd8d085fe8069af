# Sourced by the project's scripts: shared caches, cached tools on PATH, and the ONNX Runtime library from the
# pinned Python env. Build outputs live in a per-machine cache (never required: a clean machine just builds them).
root=${root:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export VP_CACHE=${VP_CACHE:-$HOME/.cache/variant-parallel}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$VP_CACHE/target}
export PATH="$VP_CACHE/bin:$PATH"
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  for lib in "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*; do
    if [ -f "$lib" ]; then export ORT_DYLIB_PATH="$lib"; fi
  done
fi
true
