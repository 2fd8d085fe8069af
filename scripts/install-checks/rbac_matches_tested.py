#!/usr/bin/env python3
# Checks that the chart renders exactly the RBAC rules the operator is tested under
# (crates/vp-operator/rbac/operator.yaml), cluster-wide and split by namespace with watchNamespace.
# Usage: rbac_matches_tested.py DEFAULT_RENDER TESTED_RBAC SCOPED_RENDER
import sys, yaml
def norm(rules):
    return sorted((tuple(sorted(r.get("apiGroups", []))), tuple(sorted(r["resources"])), tuple(sorted(r["verbs"]))) for r in rules)
def rules(path):
    out = {}
    for d in yaml.safe_load_all(open(path)):
        if d and d["kind"] in ("ClusterRole", "Role"):
            out[d["kind"]] = norm(d["rules"])
    return out
chart, tested = rules(sys.argv[1]), rules(sys.argv[2])
if chart != tested:
    sys.exit(f"chart RBAC differs from {sys.argv[2]}:\n chart:  {chart}\n tested: {tested}")
# Namespace-scoped: the same rules, split into a Role in the watched namespace, a ClusterRole for Nodes only and a
# Role for node Leases in kube-node-lease (plus the same leader-election Role).
docs = [d for d in yaml.safe_load_all(open(sys.argv[3])) if d and d["kind"] in ("ClusterRole", "Role")]
where = {(d["kind"], d["metadata"].get("namespace")): norm(d["rules"]) for d in docs if not d["metadata"]["name"].endswith("-leader-election")}
assert set(where) == {("Role", "vp-scoped"), ("ClusterRole", None), ("Role", "kube-node-lease")}, where
assert where[("ClusterRole", None)] == [(("",), ("nodes",), ("get", "list", "watch"))], where
union = sorted(r for rs in where.values() for r in rs)
if union != tested["ClusterRole"]:
    sys.exit(f"namespace-scoped RBAC differs from {sys.argv[2]}:\n scoped: {union}\n tested: {tested['ClusterRole']}")
print("test-install: chart RBAC equals crates/vp-operator/rbac/operator.yaml (cluster-wide, and split by namespace with watchNamespace)")
