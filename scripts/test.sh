#!/usr/bin/env bash
# Runs every test suite of the project on a fresh or warm machine: installs what is missing, then each part's
# test script (scripts/test-*.sh: the model toolchain's pytest suite, the CRD staleness check, the test control
# plane, the Rust workspace with fmt, clippy, unit and integration tests). Ends with one summary line counting the
# tests that the runners reported; exits non-zero if any part fails. A failed part's last lines are repeated just
# before the summary, so that the end of a long CI log says why it failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
log=$(mktemp)
part_log=$(mktemp)
trap 'rm -f "$log" "$part_log"' EXIT
failed_parts=()
failure_tails=
for part in scripts/test-*.sh; do
  [ -e "$part" ] || continue
  echo "=== $part"
  if ! bash "$part" 2>&1 | tee "$part_log"; then
    failed_parts+=("$part")
    failure_tails+="=== last 40 lines of $part"$'\n'"$(tail -n 40 "$part_log")"$'\n'
  fi
  cat "$part_log" >>"$log"
done
# cargo: "test result: ok. 17 passed; 0 failed; ..."; pytest: "49 passed in 23.62s"; go test: "ok  pkg".
read -r passed failed < <(awk '
  /^test result: / { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
  /^[0-9]+ passed/ && / in [0-9.]+s/ { p += $1 }
  / [0-9]+ failed/ && / in [0-9.]+s/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed,?$/) f += $i }
  END { print p + 0, f + 0 }' "$log")
if [ ${#failed_parts[@]} -gt 0 ]; then
  printf '%s' "$failure_tails"
  echo "failed parts: ${failed_parts[*]}"
  echo "tests: $passed passed, $((failed > 0 ? failed : 1)) failed"
  exit 1
fi
echo "tests: $passed passed, $failed failed"
