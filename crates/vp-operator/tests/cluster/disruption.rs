//! Disruption awareness and "move, don't kill" on the real control plane: a whole site going silent, the
//! operator's own API connection freezing, a short NotReady, nodes failing one after another, no spare node.
//! Each test's nodes carry `topology.kubernetes.io/zone=<its namespace>`, so each test is its own zone.

use super::*;
use std::time::Instant;
use vp_testenv::Proxy;

/// Every pod of the ensemble (variants and aggregator): name -> uid.
async fn pod_uids(ns: &TestNamespace) -> Result<BTreeMap<String, String>, kube::Error> {
    Ok(ns
        .api::<Pod>()
        .list(&ListParams::default().labels("vp.dev/ensemble=fm"))
        .await?
        .items
        .into_iter()
        .map(|p| (p.name_any(), p.metadata.uid.unwrap_or_default()))
        .collect())
}

/// This test's nodes.
async fn my_nodes(ns: &TestNamespace) -> Result<Vec<String>, kube::Error> {
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(ns.client().clone());
    Ok(api
        .list(&ListParams::default().labels(&format!("{OWNER_LABEL}={}", ns.name())))
        .await?
        .items
        .into_iter()
        .map(|n| n.name_any())
        .collect())
}

fn reason(e: &VariantEnsemble, t: ConditionType) -> String {
    e.status
        .as_ref()
        .and_then(|s| s.condition(t))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// Waits until the ensemble is Degraded with reason MovesPaused; returns the condition's message.
async fn wait_paused(ns: &TestNamespace) -> Result<String, Fail> {
    let e = wait_status(ns, "Degraded with MovesPaused", |e| {
        reason(e, ConditionType::Degraded) == "MovesPaused"
    })
    .await?;
    Ok(e.status
        .as_ref()
        .and_then(|s| s.condition(ConditionType::Degraded))
        .map(|c| c.message.clone())
        .unwrap_or_default())
}

fn moves(op: &Operator) -> u64 {
    ["LeaseExpired", "NodeNotReady", "NodeGone"]
        .iter()
        .map(|r| op.metrics.reschedules.with_label_values(&[r]).get())
        .sum()
}

/// Waits until Ready, then checks that the ensemble's pods are exactly `before` and it is Ready.
async fn assert_untouched(
    ns: &TestNamespace,
    before: &BTreeMap<String, String>,
    what: &str,
) -> Result<(), Fail> {
    wait_status(ns, &format!("Ready after {what}"), ready).await?;
    let after = pod_uids(ns).await?;
    assert_eq!(&after, before, "{what}: no pod deleted or created");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_site_silent_for_a_minute_moves_nothing() -> Result<(), Fail> {
    let (cp, ns, op) = ready_ensemble("ve-silent", &["2", "2", "2"], &["v0", "v1"], 12).await?;
    let before = pod_uids(&ns).await?;
    let mine = my_nodes(&ns).await?;
    assert_eq!(mine.len(), 3);
    let began = Instant::now();
    for n in &mine {
        cp.partition_node(n).await?;
    }
    // The operator says why nothing moves, while it lasts.
    let msg = wait_paused(&ns).await?;
    assert!(msg.contains("moves paused"), "{msg}");
    assert_eq!(op.metrics.moves_paused.get(), 1);
    // Kubernetes marks the nodes Unknown after its node monitor grace; stay silent a minute at least.
    let nodes_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(ns.client().clone());
    until(
        "every node marked Unknown and a minute passed",
        WAIT,
        || async {
            let mut unknown = 0;
            for n in &mine {
                let node = nodes_api.get(n).await.map_err(kerr("get node"))?;
                let ready = node
                    .status
                    .and_then(|s| s.conditions)
                    .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"))
                    .map(|c| c.status);
                unknown += usize::from(ready.as_deref() == Some("Unknown"));
            }
            Ok(
                if unknown == mine.len() && began.elapsed() >= Duration::from_secs(60) {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("{unknown} Unknown after {:?}", began.elapsed()))
                },
            )
        },
    )
    .await?;
    assert_eq!(
        pod_uids(&ns).await?,
        before,
        "nothing deleted during the silence"
    );
    assert_eq!(moves(&op), 0);
    for n in &mine {
        cp.revive_node(n).await?;
    }
    assert_untouched(&ns, &before, "the site came back").await?;
    // Nothing moves late either (stragglers get a full grace after the pause; none is left here).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pod_uids(&ns).await?, before);
    assert_eq!(moves(&op), 0);
    assert_event(&ns, "MovesPaused", "moves paused").await?;
    assert_event(&ns, "MovesResumed", "resumed").await?;
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn frozen_api_traffic_longer_than_the_grace_moves_nothing() -> Result<(), Fail> {
    let (cp, ns) = setup("ve-frozen").await;
    add_nodes(cp, &ns, &["2", "2", "2"]).await;
    let proxy = Proxy::for_api_server(cp).await?;
    let op = Operator::start_with(&ns, proxy.client(cp).await?);
    ns.api::<VariantEnsemble>()
        .create(&PostParams::default(), &ensemble(&ns, &["v0", "v1"], 12))
        .await?;
    wait_status(&ns, "ensemble Ready", ready).await?;
    let before = pod_uids(&ns).await?;

    // Frozen for 30 s: longer than the 12 s grace and the 21 s confirmation. The operator's caches stop, so
    // every lease looks silent to it; the nodes are fine.
    proxy.freeze();
    let frozen = Instant::now();
    until("the operator sees its view is stale", WAIT, || async {
        Ok(if op.metrics.view_stale.get() == 1 {
            Poll::Ready(())
        } else {
            Poll::Pending("view fresh".into())
        })
    })
    .await?;
    assert_eq!(op.metrics.moves_paused.get(), 1);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(frozen.elapsed())).await;
    proxy.thaw();
    until("the view is fresh again", WAIT, || async {
        Ok(if op.metrics.view_stale.get() == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending("view stale".into())
        })
    })
    .await?;
    // Past the confirmation window after the resume: anything that would move has moved by now.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_untouched(&ns, &before, "the API connection thawed").await?;
    assert_eq!(moves(&op), 0, "no variant moved");
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_not_ready_for_five_seconds_moves_nothing() -> Result<(), Fail> {
    let (_, ns, op) = ready_ensemble("ve-blip", &["2", "2", "2"], &["v0", "v1"], 12).await?;
    let before = pod_uids(&ns).await?;
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(VARIANT_PODS))
        .await?
        .items;
    let (_, node) = variant_pods(&pods)["v0"].clone();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(ns.client().clone());
    let set_ready = |status: &'static str| {
        let nodes = nodes.clone();
        let node = node.clone();
        async move {
            nodes
                .patch_status(
                    &node,
                    &PatchParams::default(),
                    &Patch::Strategic(json!({"status": {"conditions": [{
                        "type": "Ready", "status": status, "reason": "KubeletRestart",
                        "message": "test: kubelet restarting",
                        "lastHeartbeatTime": jiff::Timestamp::now().to_string(),
                        "lastTransitionTime": jiff::Timestamp::now().to_string(),
                    }]}})),
                )
                .await
        }
    };
    // A kubelet restart: NotReady for 5 s, then Ready again.
    set_ready("False").await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    set_ready("True").await?;
    // Longer than the grace and the confirmation window.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_untouched(&ns, &before, "a 5 s NotReady").await?;
    assert_eq!(moves(&op), 0);
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_of_ten_nodes_failing_one_after_another_first_move_then_pause() -> Result<(), Fail> {
    let (cp, ns, op) = ready_ensemble("ve-ten", &["2"; 10], &["v0", "v1", "v2"], 12).await?;
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(VARIANT_PODS))
        .await?
        .items;
    let hosting: BTreeSet<String> = variant_pods(&pods).into_values().map(|(_, n)| n).collect();
    let mut order: Vec<String> = hosting.iter().cloned().collect();
    order.extend(
        my_nodes(&ns)
            .await?
            .into_iter()
            .filter(|n| !hosting.contains(n)),
    );
    assert_eq!(order.len(), 10);
    // The variants' nodes first (so that there is something to move), then the rest: one every 6 s.
    for n in &order {
        cp.kill_node(n).await?;
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    let zone = ns.name().to_string();
    until("moves paused in the zone", WAIT, || async {
        let state = op.metrics.disruption.with_label_values(&[&zone]).get();
        let paused = op.metrics.moves_paused.get();
        Ok(if state == 2 && paused == 1 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("zone state {state}, moves paused {paused}"))
        })
    })
    .await?;
    assert!(moves(&op) >= 1, "the first failures moved variants");
    assert_event(&ns, "Rescheduled", "moved from").await?;
    // The status catches up with the last failures at the next reconcile (a degraded ensemble is requeued
    // every 15 s): the pause began as a PartialDisruption and ends up a full one.
    wait_status(&ns, "Degraded with MovesPaused in a FullDisruption", |e| {
        reason(e, ConditionType::Degraded) == "MovesPaused"
            && e.status
                .as_ref()
                .and_then(|s| s.condition(ConditionType::Degraded))
                .is_some_and(|c| {
                    c.message
                        .contains("FullDisruption (10/10 nodes failed at once)")
                })
    })
    .await?;
    assert_event(&ns, "MovesPaused", "moves paused").await?;
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_spare_node_leaves_the_pod_and_a_new_node_takes_it() -> Result<(), Fail> {
    let (cp, ns) = setup("ve-nospare").await;
    add_nodes(cp, &ns, &["2", "2"]).await;
    let op = Operator::start(&ns);
    // 1.5 CPU per variant: one per 2-CPU node, no room to share.
    let mut e = serde_json::to_value(ensemble(&ns, &["v0", "v1"], 12))?;
    e["spec"]["resources"] = json!({"requests": {"cpu": "1500m", "memory": "256Mi"}});
    ns.api::<VariantEnsemble>()
        .create(&PostParams::default(), &serde_json::from_value(e)?)
        .await?;
    wait_status(&ns, "ensemble Ready", ready).await?;
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(VARIANT_PODS))
        .await?
        .items;
    let (old_pod, dead) = variant_pods(&pods)["v0"].clone();
    let old_uid = ns.api::<Pod>().get(&old_pod).await?.metadata.uid;

    cp.kill_node(&dead).await?;
    let e = wait_status(&ns, "v0 left where it is, with the reason", |e| {
        e.status.as_ref().is_some_and(|s| {
            s.variants.iter().any(|v| {
                v.name == "v0"
                    && v.message
                        .as_deref()
                        .is_some_and(|m| m.contains("no healthy node to move to"))
            })
        })
    })
    .await?;
    let v0 = e
        .status
        .as_ref()
        .and_then(|s| s.variants.iter().find(|v| v.name == "v0"))
        .ok_or("v0 status")?;
    let msg = v0.message.clone().unwrap_or_default();
    assert!(msg.contains(&dead) && msg.contains("no node fits"), "{msg}");
    assert_eq!(
        ns.api::<Pod>().get(&old_pod).await?.metadata.uid,
        old_uid,
        "the pod stays where it is"
    );
    assert_eq!(moves(&op), 0);

    // A node joins: v0 moves there, and only now is the stranded pod deleted.
    let added = add_nodes(cp, &ns, &["2"]).await;
    let v0 = wait_rescheduled_once(&ns, "v0").await?;
    assert_eq!(v0.node.as_deref(), Some(added[0].as_str()));
    assert!(
        ns.api::<Pod>().get_opt(&old_pod).await?.is_none(),
        "the stranded pod is gone once its replacement has a node"
    );
    assert_eq!(moves(&op), 1);
    op.stop().await;
    Ok(())
}
