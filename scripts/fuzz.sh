#!/usr/bin/env bash
# Fuzzes the data plane's decoders (the OIP request decoder, the gRPC ModelInferRequest decoder and the image
# input) with cargo-fuzz for a bounded time each; not part of scripts/test.sh. Installs cargo-fuzz into the project
# cache on first use and needs the nightly toolchain (rustup toolchain install nightly). The corpus grows in
# fuzz/corpus/<target> (not checked in), starting from the seeds in fuzz/seeds/<target>. Prints, per target, the
# runs, the corpus size and the result; a crash stops with its reproducer in fuzz/artifacts/<target>.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
seconds=${1:-60}
fuzz_root="$VP_CACHE/cargo-fuzz"
if [ ! -x "$fuzz_root/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz into $fuzz_root"
  cargo install cargo-fuzz --locked --root "$fuzz_root"
fi
export PATH="$fuzz_root/bin:$PATH"
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)"; exit 1; }
# The fuzz build has its own target folder: sanitizer builds must not replace the normal ones.
export CARGO_TARGET_DIR="$VP_CACHE/target-fuzz"
status=0
for target in oip_request oip_grpc image_input; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  log=$(mktemp)
  echo "=== fuzz $target for ${seconds}s"
  if cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
    tail -40 "$log"
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz $target: $result, $runs runs in ${seconds}s, corpus $(find "$corpus" -type f | wc -l) files ($(du -sk "$corpus" | cut -f1) KiB)"
  rm -f "$log"
done
exit $status
