//! Ready means served, on the real test control plane: a stale aggregator config (its rollout blocked by a
//! ResourceQuota), a failed apply (a ValidatingAdmissionPolicy freezes the aggregator ConfigMap) and a variant
//! whose readiness probe keeps failing (the node simulator's readiness-failing annotation, as a kubelet reports
//! a server that answers 503) each keep Ready False with the reason, and Ready comes back once the cause goes.

use super::*;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::ResourceQuota;

/// The simulator's annotation for "this pod's readiness probe fails" (tests/controlplane, nodesim).
const READINESS_FAILING: &str = "sim.vp.dev/readiness-failing";

/// The ensemble's Ready condition at its current generation: (status, reason, message).
fn ready_condition(e: &VariantEnsemble) -> Option<(String, String, String)> {
    let st = e.status.as_ref()?;
    if st.observed_generation != e.metadata.generation {
        return None;
    }
    st.condition(ConditionType::Ready)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn condition_of(e: &VariantEnsemble, t: ConditionType) -> (String, String) {
    e.status
        .as_ref()
        .and_then(|s| s.condition(t))
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

/// Waits until Ready is False with `reason` at the current generation, then checks that it stays so for
/// `hold` (the operator must not flip to Ready while the cause lasts); returns the message.
async fn ready_stays_false(
    ns: &TestNamespace,
    reason: &str,
    hold: Duration,
) -> Result<VariantEnsemble, Fail> {
    let is = |e: &VariantEnsemble| {
        ready_condition(e).is_some_and(|(s, r, _)| s == "False" && r == reason)
    };
    let e = wait_status(ns, &format!("Ready False ({reason})"), is).await?;
    let end = std::time::Instant::now() + hold;
    while std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = ns.api::<VariantEnsemble>().get("fm").await?;
        assert!(
            is(&now),
            "Ready must stay False ({reason}) while the cause lasts: {:?}",
            now.status
        );
    }
    Ok(e)
}

async fn set_top_k(ns: &TestNamespace, k: i32) -> Result<(), Fail> {
    ns.api::<VariantEnsemble>()
        .patch(
            "fm",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"topK": k}})),
        )
        .await?;
    Ok(())
}

/// Running aggregator pods and their config digests.
async fn aggregator_digests(ns: &TestNamespace) -> Result<Vec<Option<String>>, Fail> {
    let lp =
        ListParams::default().labels("vp.dev/ensemble=fm,app.kubernetes.io/component=aggregator");
    Ok(ns
        .api::<Pod>()
        .list(&lp)
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.annotations().get("vp.dev/config-digest").cloned())
        .collect())
}

/// The digest of the config in the aggregator ConfigMap, computed as the aggregator computes it from the
/// mounted files.
async fn configmap_digest(ns: &TestNamespace) -> Result<String, Fail> {
    let cm = ns.api::<ConfigMap>().get("fm-aggregator").await?;
    let data = cm.data.unwrap_or_default();
    let file = |k: &str| data.get(k).map(String::as_bytes).unwrap_or_default();
    Ok(vp_api::config_digest(
        file("aggregator.yaml"),
        file("ensemble.yaml"),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_aggregator_config_keeps_ready_false() -> Result<(), Fail> {
    let (_cp, ns, op) = ready_ensemble("ve-stale", &["2", "2"], &["v0", "v1"], 20).await?;
    let old = configmap_digest(&ns).await?;
    assert_eq!(aggregator_digests(&ns).await?, [Some(old.clone())]);

    // No room for one more pod: the aggregator Deployment cannot start a replica of the new config, and the
    // old replica keeps serving the old one.
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-more-pods"}, "spec": {"hard": {"pods": pods.to_string()}}
    }))?;
    let quotas = ns.api::<ResourceQuota>();
    quotas.create(&PostParams::default(), &quota).await?;
    until("the quota is counted", WAIT, || async {
        let q = quotas
            .get("no-more-pods")
            .await
            .map_err(kerr("get quota"))?;
        let used = q
            .status
            .and_then(|s| s.used)
            .and_then(|u| u.get("pods").map(|q| q.0.clone()));
        Ok(if used == Some(pods.to_string()) {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("used {used:?}"))
        })
    })
    .await?;

    set_top_k(&ns, 2).await?;
    let e = ready_stays_false(&ns, "AggregatorConfigStale", Duration::from_secs(8)).await?;
    let new = configmap_digest(&ns).await?;
    assert_ne!(old, new, "topK is part of the aggregator config");
    let (_, _, msg) = ready_condition(&e).unwrap_or_default();
    assert!(
        msg.contains("1 aggregator replica(s) serve an older config, 0 the current one")
            && msg.contains(&new[..12]),
        "{msg}"
    );
    assert_eq!(
        condition_of(&e, ConditionType::Degraded),
        ("False".into(), "AllVariantsServing".into()),
        "the old config still answers"
    );
    assert_eq!(
        condition_of(&e, ConditionType::Progressing),
        ("True".into(), "AggregatorRollout".into())
    );
    assert_eq!(aggregator_digests(&ns).await?, [Some(old)]);

    // Room again: the new replica starts, the old one goes, Ready.
    quotas
        .delete("no-more-pods", &DeleteParams::default())
        .await?;
    wait_status(&ns, "Ready on the new config", |e| {
        ready(e) && e.spec.top_k == 2
    })
    .await?;
    assert_eq!(aggregator_digests(&ns).await?, [Some(new)]);
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_apply_keeps_ready_false() -> Result<(), Fail> {
    let (_cp, ns, op) = ready_ensemble("ve-apply", &["2", "2"], &["v0", "v1"], 20).await?;
    // A policy (cluster-wide, so named after the namespace, and matching only it) that refuses any update
    // of the aggregator ConfigMap and of a probe ConfigMap that tells when the policy is in force.
    let name = format!("freeze-{}", ns.name());
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name()}},
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                                   "resources": ["configmaps"]}]
            },
            "validations": [{"expression": "!(object.metadata.name in ['fm-aggregator', 'probe'])",
                             "message": "the aggregator config is frozen by a test policy"}]
        }
    }))?;
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]}
    }))?;
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(ns.client().clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(ns.client().clone());
    policies.create(&PostParams::default(), &policy).await?;
    bindings.create(&PostParams::default(), &binding).await?;
    let probe: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "probe"}}))?;
    let cms = ns.api::<ConfigMap>();
    cms.create(&PostParams::default(), &probe).await?;
    let mut n = 0;
    until("the policy is in force", WAIT, || {
        n += 1;
        let cms = cms.clone();
        async move {
            let change = json!({"data": {"n": n.to_string()}});
            Ok(
                match cms
                    .patch("probe", &PatchParams::default(), &Patch::Merge(change))
                    .await
                {
                    Err(e) if e.to_string().contains("frozen") => Poll::Ready(()),
                    other => Poll::Pending(format!("{:?}", other.map(|_| "accepted"))),
                },
            )
        }
    })
    .await?;

    set_top_k(&ns, 2).await?;
    let e = ready_stays_false(&ns, "ApplyFailed", Duration::from_secs(8)).await?;
    let (_, _, msg) = ready_condition(&e).unwrap_or_default();
    assert!(
        msg.contains("frozen"),
        "the reason names the refusal: {msg}"
    );
    assert_eq!(
        condition_of(&e, ConditionType::Progressing),
        ("True".into(), "ApplyFailed".into())
    );
    assert_event(&ns, "ApplyFailed", "frozen").await?;
    let cm = cms.get("fm-aggregator").await?;
    assert!(
        cm.data
            .as_ref()
            .and_then(|d| d.get("aggregator.yaml"))
            .is_some_and(|c| c.contains("top_k: 3")),
        "the refused config was not written"
    );

    bindings.delete(&name, &DeleteParams::default()).await?;
    policies.delete(&name, &DeleteParams::default()).await?;
    wait_status(&ns, "Ready once the apply succeeds", |e| {
        ready(e) && e.spec.top_k == 2
    })
    .await?;
    let cm = cms.get("fm-aggregator").await?;
    assert!(
        cm.data
            .as_ref()
            .and_then(|d| d.get("aggregator.yaml"))
            .is_some_and(|c| c.contains("top_k: 2"))
    );
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_variant_failing_readiness_keeps_ready_false() -> Result<(), Fail> {
    let (_cp, ns, op) = ready_ensemble("ve-unready", &["2", "2"], &["v0", "v1"], 20).await?;
    let pods = ns.api::<Pod>();
    let before = variant_pods(
        &pods
            .list(&ListParams::default().labels(VARIANT_PODS))
            .await?
            .items,
    );
    let (v0_pod, _) = before.get("v0").cloned().ok_or("v0 has a pod")?;
    // The variant answers its readiness probe with 503 from now on (a broken model session, see vp-variant).
    let failing = json!({"metadata": {"annotations": {READINESS_FAILING: "HTTP probe failed with statuscode: 503"}}});
    pods.patch(&v0_pod, &PatchParams::default(), &Patch::Merge(failing))
        .await?;
    let e = ready_stays_false(&ns, "VariantsUnavailable", Duration::from_secs(8)).await?;
    let (_, _, msg) = ready_condition(&e).unwrap_or_default();
    assert!(
        msg.contains("1/2 variants serving") && msg.contains("v0") && msg.contains("503"),
        "{msg}"
    );
    assert_eq!(
        condition_of(&e, ConditionType::Degraded),
        ("True".into(), "VariantsUnavailable".into())
    );
    // The operator does not move it: restarting a failing server on its node is the kubelet's job (liveness).
    let after = variant_pods(
        &pods
            .list(&ListParams::default().labels(VARIANT_PODS))
            .await?
            .items,
    );
    assert_eq!(after, before, "no variant pod replaced");

    // The probe passes again: Ready.
    let passing = json!({"metadata": {"annotations": {READINESS_FAILING: null}}});
    pods.patch(&v0_pod, &PatchParams::default(), &Patch::Merge(passing))
        .await?;
    wait_status(&ns, "Ready once the variant is ready again", ready).await?;
    op.stop().await;
    Ok(())
}
