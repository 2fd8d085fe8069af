# shellcheck shell=bash
# A real Prometheus scrapes a local ensemble (vpctl run) while a variant is killed and revived: the
# available-variants and expected-accuracy series drop and recover; every data-plane metric the dashboard uses
# is scraped.
# Sourced by scripts/test-install.sh after common.sh (shares its variables, helpers and clean-up).

# --- 8. a real Prometheus scrapes a local ensemble (vpctl run); a variant is killed and comes back
bin_dir=${VP_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  build_bins
  bin_dir="$CARGO_TARGET_DIR/debug"
fi
[ -n "${ORT_DYLIB_PATH:-}" ] || fail "ORT_DYLIB_PATH is not set (run scripts/setup.sh for the Python env's ONNX Runtime)"
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
agg_port=$(free_port)
prom_port=$(free_port)
state="$work/vpctl"
VP_BIN_DIR="$bin_dir" "$bin_dir/vpctl" run models/fmnist/ensemble.yaml --port "$agg_port" --variant-port 0 \
  --state-dir "$state" >"$work/vpctl-run.log" 2>&1 &
run_pid=$!
for _ in $(seq 1 240); do
  kill -0 "$run_pid" 2>/dev/null || { tail -n 20 "$work/vpctl-run.log" >&2; fail "vpctl run exited"; }
  curl -fsS "http://127.0.0.1:$agg_port/v2/health/ready" >/dev/null 2>&1 && [ -f "$state/run.json" ] && break
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$agg_port/v2/health/ready" >/dev/null || fail "the local ensemble did not become ready"
variant_targets=$(jq -c '[.variants[].url | sub("^https?://"; "")]' "$state/run.json")
cat >"$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$work/alerts.yaml"]
scrape_configs:
  - job_name: aggregator
    static_configs: [{targets: ["127.0.0.1:$agg_port"], labels: {namespace: local, ensemble: fmnist}}]
  - job_name: variants
    static_configs: [{targets: $variant_targets, labels: {namespace: local, ensemble: fmnist}}]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!
q() { curl -fsS --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" \
  | jq -r '.data.result[0].value[1] // "none"'; }
wait_for() { # wait_for DESCRIPTION QUERY EXPECTED SECONDS
  local v=none
  for _ in $(seq 1 $(( $4 * 2 ))); do
    v=$(q "$2" 2>/dev/null || echo none)
    [ "$v" = "$3" ] && return 0
    sleep 0.5
  done
  fail "$1: $2 = $v, expected $3"
}
wait_for "Prometheus scrapes the aggregator" 'vp_aggregator_available_variants' 4 60
full_acc=$(q 'vp_aggregator_expected_accuracy')
# The strongest variant: without it the subset's expected accuracy at k=3 drops (0.9267 -> 0.9217 in the manifest's
# weighted subset table; losing the weakest one, w035-r16, would barely move it, to 0.9266: its vote weight is 0.12).
victim=w050-r28
# vpctl eval SIGKILLs the variant at 20% of the stream and holds it down until 70% (then vpctl run restarts it).
"$bin_dir/vpctl" eval --url "http://127.0.0.1:$agg_port" --state-dir "$state" --limit 3000 --concurrency 2 \
  --kill "$victim@20%" --revive "$victim@70%" >"$work/eval.log" 2>&1 \
  || { tail -n 20 "$work/eval.log" >&2; fail "vpctl eval failed"; }
wait_for "recovery" 'vp_aggregator_available_variants' 4 60
min_avail=$(q 'min_over_time(vp_aggregator_available_variants[10m])')
min_acc=$(q 'min_over_time(vp_aggregator_expected_accuracy[10m])')
now_acc=$(q 'vp_aggregator_expected_accuracy')
[ "$min_avail" = 3 ] || fail "Prometheus never saw the kill: min available variants $min_avail (expected 3)"
"$py" -c "import sys; f, m, n = map(float, sys.argv[1:]); sys.exit(0 if m < f and n == f else 1)" \
  "$full_acc" "$min_acc" "$now_acc" || fail "expected accuracy did not drop and recover: full $full_acc, min $min_acc, now $now_acc"
say "real Prometheus scraped vpctl run: killing $victim dropped available variants 4 -> $min_avail and expected accuracy $full_acc -> $min_acc; both recovered"
# Every data-plane series the dashboard and alerts use is among what Prometheus really scraped (a histogram as
# its _bucket series); the operator's were checked against its own scrape above.
scraped=$(curl -fsS "http://127.0.0.1:$prom_port/api/v1/label/__name__/values" | jq -r '.data[]')
n=0
for m in $(grep -E '^vp_(aggregator|variant)_' "$work/used-metrics"); do
  printf '%s\n' "$scraped" | grep -qx -e "$m" -e "${m}_bucket" \
    || fail "the dashboard or rules use $m, which the aggregator and variants do not export (scraped: $(printf '%s\n' "$scraped" | grep -c '^vp_') vp_ series)"
  n=$((n + 1))
done
[ "$n" -ge 5 ] || fail "expected at least 5 data-plane metrics in the dashboard and rules, found $n"
say "the $n data-plane metrics used by the dashboard and rules are all in Prometheus' scrape of the aggregator and variants"
kill -TERM "$prom_pid" "$run_pid" 2>/dev/null; wait "$prom_pid" "$run_pid" 2>/dev/null || true
prom_pid= run_pid=
