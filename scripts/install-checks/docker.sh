# shellcheck shell=bash
# The Dockerfiles: COPY sources exist, built binaries are workspace bins, the variant image ships the ONNX
# Runtime the tests use.
# Sourced by scripts/test-install.sh after common.sh (shares its variables, helpers and clean-up).

# --- 5. Dockerfiles: COPY sources exist, built packages/bins are workspace bins
if [ -d docker ]; then
  bins=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null \
    | jq -r '.packages[] | .name as $p | .targets[] | select(.kind[] == "bin") | "\($p)/\(.name)"')
  [ -n "$bins" ] || fail "cargo metadata listed no workspace binaries"
  for f in docker/*Dockerfile*; do
    # COPY --from=... copies between stages; only plain COPY reads the build context (the repo root).
    grep -E '^COPY ' "$f" | grep -v -- '--from=' | while read -r _ rest; do
      for src in $(echo "$rest" | tr ' ' '\n' | grep -v '^--' | sed '$d'); do
        [ -e "$src" ] || fail "$f copies $src, which does not exist"
      done
    done
    for pb in $(grep -oE 'VP_BIN=[a-z0-9-]+/[a-z0-9-]+|--bin [a-z0-9-]+' "$f" | sed 's/^VP_BIN=//; s/^--bin //' | sort -u); do
      case "$pb" in
        */*) echo "$bins" | grep -qx "$pb" || fail "$f builds $pb, which is not a workspace bin" ;;
        *) echo "$bins" | grep -q "/$pb\$" || fail "$f builds --bin $pb, which is not a workspace bin" ;;
      esac
    done
  done
  # The variant image's ONNX Runtime: the same version the tests run (models/requirements.txt), taken from the
  # wheel at the path the tests' own copy has, and ORT_DYLIB_PATH names the file the image copies it to.
  df=docker/Dockerfile
  ort_image=$(sed -n 's/^ARG ORT_VERSION=//p' "$df")
  ort_tests=$(sed -n 's/^onnxruntime==//p' models/requirements.txt)
  [ -n "$ort_image" ] && [ "$ort_image" = "$ort_tests" ] \
    || fail "$df builds ONNX Runtime '$ort_image' but the tests use '$ort_tests' (models/requirements.txt)"
  wheel_lib=$("$py" -c 'import onnxruntime, os, glob; print(" ".join(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*"))))')
  [ -n "$wheel_lib" ] || fail "the onnxruntime wheel has no capi/libonnxruntime.so.*, which $df copies"
  grep -q 'cp /wheel/onnxruntime/capi/libonnxruntime.so.\* /ort/libonnxruntime.so' "$df" \
    || fail "$df no longer copies onnxruntime/capi/libonnxruntime.so.* from the wheel"
  dylib=$(sed -n 's/^ENV ORT_DYLIB_PATH=//p' "$df")
  grep -q "^COPY --from=ort /ort/libonnxruntime.so $dylib\$" "$df" \
    || fail "$df sets ORT_DYLIB_PATH=$dylib but does not copy the library there"
  # The wheel is pinned by digest: one sha256 per platform, and pip told to refuse anything else.
  for a in AMD64 ARM64; do
    grep -Eq "^ARG ORT_WHEEL_SHA256_$a=[0-9a-f]{64}\$" "$df" || fail "$df lacks ARG ORT_WHEEL_SHA256_$a=<64 hex digits>"
  done
  grep -q -- '--require-hashes' "$df" || fail "$df downloads the ONNX Runtime wheel without --require-hashes"
  say "Dockerfiles: COPY sources exist; their binaries are workspace bins; the variant image's ONNX Runtime is $ort_image like the tests', from the wheel path the tests' copy has, at ORT_DYLIB_PATH; the wheel is pinned by sha256"
fi
