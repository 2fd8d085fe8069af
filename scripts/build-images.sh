#!/usr/bin/env bash
# Builds the project's container images without a container engine or registry, as docker-archive tarballs that
# the test site's nodes import (scripts/site.sh): the three images of docker/Dockerfile -- vp-operator, vp-variant,
# vp-aggregator, tagged localhost/<name>:site -- from the release binaries (stripped of debug lines, as the
# Dockerfile does) and ONNX Runtime's library from the pinned Python env, each on a distroless-like base made of
# this Debian 12 host's glibc and libstdc++ (the libraries gcr.io/distroless/cc-debian12 holds), user 65532, no
# shell; plus the two images the cluster needs besides: a pause image (the pod sandbox, a static Go program) and
# a fetch image with sh, curl and sha256sum (the operator's model download init container).
#   scripts/build-images.sh            build (cached by the inputs' hashes) and link $VP_CACHE/images/current
#   scripts/build-images.sh --check    also compare the three images with docker/Dockerfile (scripts/lib/oci_image.py)
# VP_IMAGES_BIN_DIR=DIR takes vp-operator, vp-variant and vp-aggregator from DIR instead of a release build.
# Output: $VP_CACHE/images/<key>/*.tar. Cold: a release build of three crates (~6-10 min on 2 idle cores).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# env.sh may return non-zero when no ONNX Runtime library is found; only its exports matter here.
. "$root/scripts/env.sh" || true
cd "$root"
check=0
[ "${1:-}" = "--check" ] && check=1
py=python3
tool="$root/scripts/lib/oci_image.py"

[ -n "${ORT_DYLIB_PATH:-}" ] && [ -f "$ORT_DYLIB_PATH" ] \
  || { echo "build-images: no ONNX Runtime library (ORT_DYLIB_PATH); run scripts/setup.sh first" >&2; exit 1; }
[ -x "$VP_CACHE/bin/vp-pause" ] || { echo "build-images: $VP_CACHE/bin/vp-pause is missing; run scripts/setup-nodes.sh" >&2; exit 1; }

# VP_IMAGES_BIN_DIR: take the binaries from there instead (any profile; for trying out a build at hand).
rel=${VP_IMAGES_BIN_DIR:-}
if [ -z "$rel" ]; then
  echo "build-images: cargo build --release (vp-operator, vp-variant, vp-aggregator; vpctl for the tests' client)" >&2
  nice -n 10 cargo build --locked --release -q -p vp-operator --bin vp-operator -p vp-variant --bin vp-variant \
    -p vp-aggregator --bin vp-aggregator -p vpctl --bin vpctl
  rel="$CARGO_TARGET_DIR/release"
fi

key=$(cat "$rel/vp-operator" "$rel/vp-variant" "$rel/vp-aggregator" "$ORT_DYLIB_PATH" "$VP_CACHE/bin/vp-pause" \
  "$tool" "$0" /usr/bin/curl | sha256sum | cut -c1-16)
out="$VP_CACHE/images/$key"
if [ ! -f "$out/done" ]; then
  began=$(date +%s)
  rm -rf "$out" && mkdir -p "$out/bin"
  for b in vp-operator vp-variant vp-aggregator; do
    cp "$rel/$b" "$out/bin/$b"
    strip --strip-debug "$out/bin/$b"
  done
  spec=$(mktemp -d)
  trap 'rm -rf "$spec"' EXIT
  # What gcr.io/distroless/cc-debian12:nonroot holds that a program can notice: users and groups, CA
  # certificates, a sticky /tmp, the nonroot home, glibc's name service defaults, and the C/C++ runtime.
  base_files='
    {"path": "/lib", "symlink": "usr/lib"}, {"path": "/lib64", "symlink": "usr/lib64"},
    {"path": "/etc/passwd", "text": "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
    {"path": "/etc/group", "text": "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"},
    {"path": "/etc/nsswitch.conf", "text": "passwd: files\ngroup: files\nhosts: files dns\n"},
    {"path": "/etc/ssl/certs/ca-certificates.crt", "src": "/etc/ssl/certs/ca-certificates.crt"},
    {"path": "/tmp", "dir": true, "mode": 1023},
    {"path": "/home/nonroot", "dir": true, "mode": 448, "owner": 65532},
    {"path": "/root", "dir": true, "mode": 448}'
  # distroless/cc: all of libc6's run-time libraries, libgcc_s and libstdc++.
  cc_libs=$(for l in ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libresolv.so.2 \
    libnss_dns.so.2 libnss_files.so.2 libutil.so.1 libanl.so.1 libmvec.so.1 libgcc_s.so.1 libstdc++.so.6; do
    printf '"/usr/lib/x86_64-linux-gnu/%s",' "$l"; done)
  cc_libs=${cc_libs%,}
  image() { # NAME BINARY EXTRA_FILES EXTRA_ENV EXPOSED_PORTS (as in docker/Dockerfile)
    local name=$1 b=$2 files=$3 env=$4 expose=$5
    cat >"$spec/$name.json" <<EOF
{"name": "localhost/$name:site", "user": "65532:65532", "entrypoint": ["/usr/local/bin/$b"], "expose": [$expose],
 "env": {$env},
 "files": [$base_files,
   {"path": "/usr/local/bin/$b", "src": "$out/bin/$b", "mode": 493} $files],
 "libs": [$cc_libs], "libs_of": ["$out/bin/$b"]}
EOF
    $py "$tool" build "$spec/$name.json" "$out/$name.tar"
  }
  image vp-operator vp-operator "" "" 8080
  image vp-aggregator vp-aggregator "" "" "8080, 8081"
  image vp-variant vp-variant \
    ", {\"path\": \"/usr/local/lib/libonnxruntime.so\", \"src\": \"$ORT_DYLIB_PATH\", \"mode\": 420}" \
    '"ORT_DYLIB_PATH": "/usr/local/lib/libonnxruntime.so"' "8080, 8081"
  cat >"$spec/pause.json" <<EOF
{"name": "localhost/vp-pause:site", "user": "65535:65535", "entrypoint": ["/pause"],
 "files": [{"path": "/pause", "src": "$VP_CACHE/bin/vp-pause", "mode": 493}]}
EOF
  $py "$tool" build "$spec/pause.json" "$out/vp-pause.tar"
  # The fetch init container runs `sh -c` with curl, sha256sum and mv, as user 65532 (the pod's).
  cat >"$spec/fetch.json" <<EOF
{"name": "localhost/vp-fetch:site", "user": "65532:65532", "entrypoint": ["/bin/sh"],
 "files": [$base_files, {"path": "/bin", "symlink": "usr/bin"},
   {"path": "/usr/bin/sh", "src": "/usr/bin/dash", "mode": 493},
   {"path": "/usr/bin/curl", "src": "/usr/bin/curl", "mode": 493},
   {"path": "/usr/bin/sha256sum", "src": "/usr/bin/sha256sum", "mode": 493},
   {"path": "/usr/bin/mv", "src": "/usr/bin/mv", "mode": 493}],
 "libs_of": ["/usr/bin/dash", "/usr/bin/curl", "/usr/bin/sha256sum", "/usr/bin/mv"]}
EOF
  $py "$tool" build "$spec/fetch.json" "$out/vp-fetch.tar"
  rm -rf "$out/bin"
  touch "$out/done"
  echo "build-images: built in $(( $(date +%s) - began )) s: $(cd "$out" && du -ch ./*.tar | tail -n 1 | cut -f1)" >&2
  find "$VP_CACHE/images" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
fi
ln -sfn "$out" "$VP_CACHE/images/current"
if [ "$check" = 1 ]; then
  for t in operator variant aggregator; do
    $py "$tool" check docker/Dockerfile "$t" "$out/vp-$t.tar"
  done
  echo "build-images: the three images match docker/Dockerfile's runtime stages" >&2
fi
