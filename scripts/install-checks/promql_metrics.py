#!/usr/bin/env python3
# Extracts the PromQL of the alert rules and the Grafana dashboard into rule files for promtool, and checks that
# they name only metrics some binary registers (crates/*/src). Writes WORK/alerts.yaml, WORK/dashboard-rules.yaml
# and WORK/used-metrics.
# Usage: promql_metrics.py FULL_RENDER DASHBOARD_JSON WORK
import json, re, sys, yaml, glob
full, dash_path, work = sys.argv[1:]
rule = next(d for d in yaml.safe_load_all(open(full)) if d and d["kind"] == "PrometheusRule")
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(f"{work}/alerts.yaml", "w"))
dash = json.load(open(dash_path))
exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
exprs += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
def grafana_to_promql(e):
    # Grafana variables -> values Prometheus accepts; label_values(m, l) is Grafana's, its first argument is PromQL.
    m = re.fullmatch(r"label_values\((.*),\s*\w+\)", e)
    e = m.group(1) if m else e
    return e.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$ensemble", ".*")
rec = [{"record": f"dashboard:expr_{i}", "expr": grafana_to_promql(e)} for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rec}]}, open(f"{work}/dashboard-rules.yaml", "w"))
registered = set()
for f in glob.glob("crates/*/src/**/*.rs", recursive=True):
    registered |= set(re.findall(r'"(vp_[a-z0-9_]+)"', open(f).read()))
# Names used by the metrics registrations only (Opts::new / HistogramOpts::new / IntGauge::new / Gauge::new).
used = set()
all_exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]] + [r["expr"] for r in rec]
for e in all_exprs:
    for name in re.findall(r"\b(vp_[a-z0-9_]+)\b", e):
        used.add(re.sub(r"_(bucket|sum|count)$", "", name) if name.endswith(("_bucket", "_sum", "_count")) else name)
missing = sorted(used - registered)
if missing:
    sys.exit(f"dashboard/rules use metrics no binary registers: {missing}")
open(f"{work}/used-metrics", "w").write("\n".join(sorted(used)) + "\n")
print(f"test-install: dashboard ({len(exprs)} queries) and rules use {len(used)} metrics, all registered in crates/*/src")
