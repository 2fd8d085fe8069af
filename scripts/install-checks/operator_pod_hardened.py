#!/usr/bin/env python3
# Checks the operator Deployment of each rendered chart: hardened pod and container, probes, downward-API
# env, watchNamespace and leader-election flags as the values ask.
# Usage: operator_pod_hardened.py RENDER...
import sys, yaml
for path in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    kinds = sorted(d["kind"] for d in docs)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, psc
    assert psc["seccompProfile"]["type"] == "RuntimeDefault", psc
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, sc
    assert sc["capabilities"]["drop"] == ["ALL"], sc
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["resources"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    scoped = "--watch-namespace=vp-scoped" in c["args"]
    assert scoped == path.endswith("scoped.yaml"), (path, c["args"])
    leader = "--leader-elect" in c["args"]
    assert leader == (dep["spec"]["replicas"] > 1), (dep["spec"]["replicas"], c["args"])
    print(f"test-install: {path.rsplit('/',1)[-1]}: {len(docs)} objects {kinds}; operator pod hardened; leader election {leader}")
