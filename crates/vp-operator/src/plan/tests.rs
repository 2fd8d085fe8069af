use super::*;
use crate::desired::FAILED_SINCE;
use crate::fixtures;
use crate::health::{FailureReason, Health, Hold};
use crate::observe::{self, node_info};
use crate::reconcile::validate::validate;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use vp_api::ConditionType::{Degraded, Progressing, Ready};
use vp_api::labels::VARIANT;
use vp_api::{ConditionType, EnsembleManifest};

const T0: &str = "2026-01-01T00:00:00Z";

fn at(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// The fixture nodes plus a spare edge node `edge-f`, with edge-a judged by `a_health`.
fn nodes(a_health: Health) -> Vec<NodeInfo> {
    let mut out: Vec<NodeInfo> = fixtures::nodes()
        .iter()
        .map(|n| {
            let h = if n.metadata.name.as_deref() == Some("edge-a") {
                a_health.clone()
            } else {
                Health::Healthy
            };
            node_info(n, h, (0.0, 0.0))
        })
        .collect();
    let mut spare = out[4].clone();
    spare.name = "edge-f".into();
    spare.cpu = 1.0;
    out.push(spare);
    out
}

/// A Ready aggregator pod bound to `node`.
fn aggregator_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "aggregator"}},
        "spec": {"nodeName": node, "containers": [{"name": "aggregator"}]},
        "status": {"phase": "Running", "startTime": T0,
                   "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": T0}]}
    }))
    .expect("pod")
}

/// `pod` as made from a template whose config digest is `digest`.
fn with_digest(mut pod: Pod, digest: &str) -> Pod {
    pod.annotations_mut()
        .insert(desired::CONFIG_DIGEST.into(), digest.into());
    pod
}

struct World {
    ens: VariantEnsemble,
    manifest: EnsembleManifest,
    pods: Vec<Pod>,
    aggregators: Vec<Pod>,
    cfg: OperatorConfig,
    /// Whether the aggregator Deployment rolls out at once: before each step every aggregator pod gets the
    /// current config digest (as if replaced by a pod of the new template that is Ready already).
    instant_rollout: bool,
}

impl World {
    fn new() -> Self {
        Self {
            ens: fixtures::ensemble(),
            manifest: fixtures::manifest(),
            pods: vec![],
            aggregators: vec![aggregator_pod("fm-aggregator-1", "edge-b")],
            cfg: OperatorConfig::default(),
            instant_rollout: true,
        }
    }

    /// The digest of the config the aggregator should serve for the current spec.
    fn digest(&self) -> String {
        let cm = desired::aggregator_configmap(&self.ens, &self.manifest, fixtures::MANIFEST)
            .expect("configmap");
        desired::configmap_digest(&cm)
    }

    /// Plans, then carries the plan out the way the controller would (creates, deletes, status).
    fn step(&mut self, nodes: &[NodeInfo], now: &str) -> Plan {
        if self.instant_rollout {
            let digest = self.digest();
            for p in &mut self.aggregators {
                *p = with_digest(p.clone(), &digest);
            }
        }
        let plan = plan(&Inputs {
            ensemble: &self.ens,
            valid: validate(
                &self.ens,
                Ok((&self.manifest, fixtures::MANIFEST)),
                &crate::config::OperatorConfig::default().host_path_prefixes,
            ),
            nodes,
            pods: &self.pods,
            services: &[],
            aggregator_pods: &self.aggregators,
            config: &self.cfg,
            now: at(now),
        });
        let gone: BTreeSet<&str> = plan.delete.iter().map(|d| d.name.as_str()).collect();
        self.pods.retain(|p| !gone.contains(p.name_any().as_str()));
        self.aggregators
            .retain(|p| !gone.contains(p.name_any().as_str()));
        self.pods.extend(plan.create.iter().cloned());
        self.ens.status = Some(plan.status.clone());
        plan
    }

    /// A world whose first plan ran at T0 on `nodes` and whose pods all turned Ready at `ready_at`.
    fn ready_on(nodes: &[NodeInfo], ready_at: &str) -> Self {
        let mut w = Self::new();
        w.step(nodes, T0);
        w.all_ready(ready_at);
        w
    }

    /// Marks every pod Ready since `when` (as a kubelet would).
    fn all_ready(&mut self, when: &str) {
        for p in &mut self.pods {
            if !observe::pod_ready(p) {
                p.status = Some(serde_json::from_value(serde_json::json!({
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": when}]
                })).expect("status"));
            }
        }
    }

    fn node_of(&self, variant: &str) -> Option<String> {
        self.pods
            .iter()
            .find(|p| p.labels().get(VARIANT).map(String::as_str) == Some(variant))
            .and_then(|p| observe::pod_node(p).map(str::to_string))
    }
}

fn cond(s: &VariantEnsembleStatus, t: ConditionType) -> (&str, &str) {
    let c = s.condition(t).expect("condition present");
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn fresh_ensemble_places_one_variant_per_node_biggest_first() {
    let mut w = World::new();
    let p = w.step(&nodes(Health::Healthy), T0);
    assert_eq!(p.create.len(), 4);
    assert_eq!(p.services.len(), 4);
    assert!(p.aggregator.is_some());
    assert!(p.delete.is_empty() && p.reschedules.is_empty());
    // v2 has the most MACs -> the 4-CPU node; the cordoned, unlabelled nodes are not used.
    assert_eq!(w.node_of("v2").as_deref(), Some("edge-a"));
    assert_eq!(w.node_of("v1").as_deref(), Some("edge-b"));
    let used: BTreeSet<String> = ["v0", "v1", "v2", "v3"]
        .iter()
        .filter_map(|v| w.node_of(v))
        .collect();
    assert_eq!(used.len(), 4, "one variant per node");
    assert!(!used.contains("edge-d") && !used.contains("core-0"));
    assert_eq!(cond(&p.status, Ready), ("False", "VariantsUnavailable"));
    assert_eq!(cond(&p.status, Progressing), ("True", "Reconciling"));
    assert_eq!(p.status.available_variants, 0);
    assert_eq!(p.status.desired_variants, 4);
    assert_eq!(p.status.expected_accuracy, None);
    assert!(
        p.events.is_empty(),
        "no Degraded event for a brand-new ensemble: {:?}",
        p.events
    );
}

#[test]
fn steady_state_is_idempotent_and_ready() {
    let n = nodes(Health::Healthy);
    let mut w = World::ready_on(&n, "2026-01-01T00:00:05Z");
    let p = w.step(&n, "2026-01-01T00:00:06Z");
    assert!(
        p.create.is_empty() && p.delete.is_empty(),
        "{:?} {:?}",
        p.create.len(),
        p.delete
    );
    assert_eq!(cond(&p.status, Ready), ("True", "AllVariantsServing"));
    assert_eq!(cond(&p.status, Degraded), ("False", "AllVariantsServing"));
    assert_eq!(cond(&p.status, Progressing), ("False", "Stable"));
    assert_eq!(p.status.expected_accuracy, Some(0.922));
    assert_eq!(
        p.status.aggregator_endpoint.as_deref(),
        Some("http://fm-aggregator.edge.svc:9000")
    );
    let again = w.step(&n, "2026-01-01T00:00:30Z");
    assert!(again.create.is_empty() && again.delete.is_empty() && again.events.is_empty());
    assert_eq!(
        again.status, p.status,
        "nothing churns, transition times kept"
    );
}

#[test]
fn failed_node_moves_its_variant_to_the_spare_and_recovers() {
    let mut w = World::new();
    w.step(&nodes(Health::Healthy), T0);
    w.all_ready("2026-01-01T00:00:05Z");
    w.step(&nodes(Health::Healthy), "2026-01-01T00:00:06Z");
    let old_pod = w
        .pods
        .iter()
        .find(|p| p.labels()[VARIANT] == "v2")
        .map(|p| p.name_any())
        .expect("v2 pod");

    let failed = Health::Failed(FailureReason::LeaseExpired { silent_s: 21 });
    let p = w.step(&nodes(failed.clone()), "2026-01-01T00:01:00Z");
    assert_eq!(
        p.delete,
        vec![Deletion {
            name: old_pod,
            force: true,
            why: "edge-a: node lease not renewed for 21s".into()
        }]
    );
    assert_eq!(p.create.len(), 1);
    assert_eq!(w.node_of("v2").as_deref(), Some("edge-f"));
    assert_eq!(
        p.create[0].annotations()[FAILED_SINCE],
        "2026-01-01T00:00:39Z",
        "silence began 21 s before"
    );
    assert_eq!(
        p.reschedules,
        vec![Reschedule {
            variant: "v2".into(),
            reason: "LeaseExpired",
            from: Some("edge-a".into()),
            to: Some("edge-f".into())
        }]
    );
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == "Rescheduled" && e.message.contains("from edge-a to edge-f"))
    );
    assert!(p.events.iter().any(|e| e.reason == "Degraded"));
    assert_eq!(cond(&p.status, Degraded), ("True", "VariantsUnavailable"));
    assert_eq!(cond(&p.status, Progressing), ("True", "Rescheduling"));
    assert_eq!(p.status.available_variants, 3);
    assert_eq!(
        p.status.expected_accuracy,
        Some(0.910),
        "subset {{v0, v1, v3}} at k=3"
    );
    let v2 = p
        .status
        .variants
        .iter()
        .find(|v| v.name == "v2")
        .expect("v2 status");
    assert_eq!(
        (v2.reschedules, v2.ready, v2.node.as_deref()),
        (1, false, Some("edge-f"))
    );

    // The replacement becomes ready 4 s after it was created: failure-to-ready is 25 s.
    w.all_ready("2026-01-01T00:01:04Z");
    let p = w.step(&nodes(failed), "2026-01-01T00:01:05Z");
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(
        p.recovered,
        vec![Recovery {
            variant: "v2".to_string(),
            reason: "LeaseExpired".to_string(),
            after: Duration::from_secs(25)
        }]
    );
    assert_eq!(cond(&p.status, Ready), ("True", "AllVariantsServing"));
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == "Recovered" && !e.warning)
    );
    let v2 = p
        .status
        .variants
        .iter()
        .find(|v| v.name == "v2")
        .expect("v2 status");
    assert_eq!(v2.reschedules, 1, "counted once");
}

#[test]
fn a_returning_node_is_used_again_without_moving_serving_variants() {
    let mut w = World::new();
    let failed = Health::Failed(FailureReason::NotReady);
    w.step(&nodes(failed), T0);
    assert!(w.node_of("v2").is_some_and(|n| n != "edge-a"));
    w.all_ready("2026-01-01T00:00:05Z");
    let p = w.step(&nodes(Health::Healthy), "2026-01-01T00:00:10Z");
    assert!(
        p.create.is_empty() && p.delete.is_empty(),
        "no disruptive move back"
    );
}

#[test]
fn no_spare_leaves_the_pods_where_they_are_and_a_new_node_takes_them() {
    let mut w = World::new();
    let mut n = nodes(Health::Healthy);
    n.retain(|n| n.name == "edge-a" || n.name == "edge-b");
    w.step(&n, T0);
    w.all_ready("2026-01-01T00:00:05Z");
    let before: BTreeSet<String> = w.pods.iter().map(ResourceExt::name_any).collect();
    // Both nodes fail and nothing else fits: move, don't kill — every pod stays where it is.
    let dead: Vec<NodeInfo> = n
        .iter()
        .cloned()
        .map(|mut x| {
            x.health = Health::Failed(FailureReason::NotReady);
            x
        })
        .collect();
    let p = w.step(&dead, "2026-01-01T00:01:00Z");
    assert!(p.delete.is_empty(), "nothing deleted: {:?}", p.delete);
    assert!(p.create.is_empty());
    assert!(p.reschedules.is_empty(), "nothing moved yet");
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == "FailedPlacement" && e.message.contains("2 failed"))
    );
    assert_eq!(cond(&p.status, Degraded), ("True", "NoVariantServing"));
    for v in &p.status.variants {
        let m = v.message.as_deref().unwrap_or_default();
        assert!(
            m.starts_with("left on edge-")
                && m.contains("no healthy node to move to: no node fits"),
            "{m}"
        );
        assert_eq!(v.reschedules, 0);
    }
    let agg = &p.status.condition(Ready).expect("ready").message;
    assert!(agg.contains("not serving"), "{agg}");
    // Same situation again: no repeated FailedPlacement events, still nothing deleted.
    let p = w.step(&dead, "2026-01-01T00:01:10Z");
    assert!(!p.events.iter().any(|e| e.reason == "FailedPlacement"));
    assert!(p.delete.is_empty());
    let after: BTreeSet<String> = w.pods.iter().map(ResourceExt::name_any).collect();
    assert_eq!(before, after);

    // A node joins: the variants that fit move there, and only their stranded pods go.
    let mut more = dead.clone();
    let mut spare = nodes(Health::Healthy)
        .into_iter()
        .find(|x| x.name == "edge-f")
        .expect("spare");
    spare.cpu = 4.0;
    more.push(spare);
    let p = w.step(&more, "2026-01-01T00:02:00Z");
    assert_eq!(p.create.len(), 4, "{:?}", p.create.len());
    assert!(
        p.create
            .iter()
            .all(|c| observe::pod_node(c) == Some("edge-f"))
    );
    let gone: BTreeSet<&str> = p.delete.iter().map(|d| d.name.as_str()).collect();
    assert!(before.iter().all(|b| gone.contains(b.as_str())), "{gone:?}");
    assert!(p.delete.iter().all(|d| d.force));
    assert_eq!(p.reschedules.len(), 4);
    assert!(
        p.reschedules
            .iter()
            .all(|r| r.to.as_deref() == Some("edge-f"))
    );
}

#[test]
fn a_held_node_keeps_its_pods_and_the_status_says_moves_are_paused() {
    let n = nodes(Health::Healthy);
    let mut w = World::ready_on(&n, "2026-01-01T00:00:05Z");
    w.aggregators = vec![aggregator_pod("fm-aggregator-1", "edge-a")];
    w.step(&n, "2026-01-01T00:00:06Z");
    let hold = Hold::Disruption {
        zone: "site".into(),
        state: "FullDisruption",
        failed: 5,
        total: 5,
    };
    let held: Vec<NodeInfo> = n
        .iter()
        .cloned()
        .map(|mut x| {
            x.health = Health::Held(FailureReason::LeaseExpired { silent_s: 40 }, hold.clone());
            x
        })
        .collect();
    let p = w.step(&held, "2026-01-01T00:01:00Z");
    assert!(p.delete.is_empty() && p.create.is_empty(), "{:?}", p.delete);
    assert!(p.reschedules.is_empty());
    assert!(!p.events.iter().any(|e| e.reason == "FailedPlacement"));
    assert_eq!(cond(&p.status, Degraded), ("True", "MovesPaused"));
    assert_eq!(cond(&p.status, Progressing).1, "MovesPaused");
    assert_eq!(cond(&p.status, Ready).0, "False");
    let msg = &p.status.condition(Degraded).expect("degraded").message;
    assert!(
        msg.contains("FullDisruption (5/5 nodes failed at once)"),
        "{msg}"
    );
    assert!(p.status.variants.iter().all(|v| {
        v.message
            .as_deref()
            .is_some_and(|m| m.contains("not moved: moves paused"))
    }));
    assert_eq!(
        p.events
            .iter()
            .filter(|e| e.reason == "MovesPaused")
            .count(),
        1
    );
    // Still paused: no second event.
    let p = w.step(&held, "2026-01-01T00:01:10Z");
    assert!(!p.events.iter().any(|e| e.reason == "MovesPaused"));
    // The nodes are back: Ready again, one MovesResumed event, and nothing was ever replaced.
    let p = w.step(&n, "2026-01-01T00:01:30Z");
    assert!(p.delete.is_empty() && p.create.is_empty());
    assert_eq!(cond(&p.status, Ready), ("True", "AllVariantsServing"));
    assert_eq!(
        p.events
            .iter()
            .filter(|e| e.reason == "MovesResumed")
            .count(),
        1
    );
}

#[test]
fn a_rate_limited_failure_is_a_short_wait_not_a_pause() {
    let n = nodes(Health::Healthy);
    let mut w = World::ready_on(&n, "2026-01-01T00:00:05Z");
    let p = w.step(
        &nodes(Health::Held(FailureReason::NotReady, Hold::RateLimited)),
        "2026-01-01T00:01:00Z",
    );
    assert!(p.delete.is_empty() && p.create.is_empty());
    assert_eq!(cond(&p.status, Degraded), ("True", "VariantsUnavailable"));
    let v2 = p
        .status
        .variants
        .iter()
        .find(|v| v.name == "v2")
        .expect("v2");
    assert!(
        v2.message
            .as_deref()
            .is_some_and(|m| m.contains("waiting for the eviction rate limit")),
        "{v2:?}"
    );
}

#[test]
fn evicted_pod_is_replaced_on_another_node() {
    let n = nodes(Health::Healthy);
    let mut w = World::ready_on(&n, "2026-01-01T00:00:05Z");
    w.step(&n, "2026-01-01T00:00:06Z");
    let pod = w
        .pods
        .iter_mut()
        .find(|p| p.labels()[VARIANT] == "v0")
        .expect("v0");
    let was = observe::pod_node(pod).map(str::to_string);
    pod.status = Some(
        serde_json::from_value(serde_json::json!({"phase": "Failed", "reason": "Evicted"}))
            .expect("status"),
    );
    let p = w.step(&n, "2026-01-01T00:00:30Z");
    assert_eq!(p.reschedules.len(), 1);
    assert_eq!(p.reschedules[0].reason, "PodFailed");
    assert_ne!(w.node_of("v0"), was, "avoids the node it was evicted from");
}

#[test]
fn spec_change_rolls_without_taking_the_variant_down() {
    let n = nodes(Health::Healthy);
    let mut w = World::ready_on(&n, "2026-01-01T00:00:05Z");
    w.step(&n, "2026-01-01T00:00:06Z");
    w.ens.spec.images.variant = Some("example/vp-variant:2".into());
    let p = w.step(&n, "2026-01-01T00:00:10Z");
    assert_eq!(p.create.len(), 4, "new pods on the same nodes");
    assert!(
        p.delete.is_empty(),
        "old pods keep serving until the new ones are ready"
    );
    assert_eq!(p.status.available_variants, 4);
    w.all_ready("2026-01-01T00:00:15Z");
    let p = w.step(&n, "2026-01-01T00:00:16Z");
    assert_eq!(p.delete.len(), 4);
    assert!(p.delete.iter().all(|d| !d.force));
    assert_eq!(p.status.available_variants, 4);
}

#[test]
fn removed_variant_loses_pod_and_service() {
    let mut w = World::new();
    let n = nodes(Health::Healthy);
    w.step(&n, T0);
    w.ens.spec.variants.retain(|v| v.name != "v3");
    let p = plan(&Inputs {
        ensemble: &w.ens,
        valid: validate(
            &w.ens,
            Ok((&w.manifest, fixtures::MANIFEST)),
            &crate::config::OperatorConfig::default().host_path_prefixes,
        ),
        nodes: &n,
        pods: &w.pods,
        services: &["v0".into(), "v3".into()],
        aggregator_pods: &w.aggregators,
        config: &w.cfg,
        now: at(T0),
    });
    assert_eq!(p.delete.len(), 1);
    assert!(p.delete[0].name.starts_with("fm-v3-"));
    assert_eq!(p.delete_services, vec!["v3".to_string()]);
}

#[test]
fn invalid_spec_touches_nothing_and_says_why_once() {
    let mut w = World::new();
    w.ens.spec.model.classes = 12;
    let p = w.step(&nodes(Health::Healthy), T0);
    assert!(p.create.is_empty() && p.aggregator.is_none() && p.services.is_empty());
    assert_eq!(cond(&p.status, Ready), ("False", "InvalidSpec"));
    let msg = &p.status.condition(Ready).expect("ready").message;
    assert!(
        msg.contains("classes is 12") && msg.contains("is 10"),
        "{msg}"
    );
    assert_eq!(p.events.len(), 1);
    let p = w.step(&nodes(Health::Healthy), T0);
    assert!(p.events.is_empty(), "same problem, no new event");
}

#[test]
fn manifest_problems_and_unknown_variants_are_reported() {
    let mut w = World::new();
    w.ens.spec.variants[0].name = "v9".into();
    let p = w.step(&nodes(Health::Healthy), T0);
    let msg = &p.status.condition(Ready).expect("ready").message;
    assert!(msg.contains("v9 is not in manifest family fmnist"), "{msg}");
    let p = plan(&Inputs {
        ensemble: &fixtures::ensemble(),
        valid: Err("configmap edge/fmnist-manifest not found".into()),
        nodes: &[],
        pods: &[],
        services: &[],
        aggregator_pods: &[],
        config: &w.cfg,
        now: at(T0),
    });
    assert!(
        p.status
            .condition(Ready)
            .is_some_and(|c| c.message.contains("not found"))
    );
}

#[test]
fn url_digest_must_match_the_manifest() {
    let mut w = World::new();
    if let Some(u) = w.ens.spec.variants[1].source.url.as_mut() {
        u.sha256 = "f".repeat(64);
    }
    let p = w.step(&nodes(Health::Healthy), T0);
    let msg = &p.status.condition(Ready).expect("ready").message;
    assert!(msg.contains("differs from the manifest"), "{msg}");
}

#[test]
fn aggregator_on_a_failed_node_is_replaced_and_does_not_count_as_serving() {
    let healthy = nodes(Health::Healthy);
    let mut w = World::ready_on(&healthy, T0);
    w.aggregators = vec![aggregator_pod("fm-aggregator-1", "edge-a")];
    let p = w.step(&healthy, T0);
    assert_eq!(cond(&p.status, Ready), ("True", "AllVariantsServing"));

    // edge-a goes silent: the aggregator pod there still looks Ready to the API server but is not counted,
    // and it is force-deleted (once, with one event) so that its ReplicaSet replaces it now.
    let failed = Health::Failed(FailureReason::LeaseExpired { silent_s: 21 });
    let p = w.step(&nodes(failed.clone()), "2026-01-01T00:01:00Z");
    let gone: Vec<_> = p
        .delete
        .iter()
        .filter(|d| d.name == "fm-aggregator-1")
        .collect();
    assert_eq!(gone.len(), 1);
    assert!(
        gone[0].force && gone[0].why.contains("edge-a"),
        "{:?}",
        gone[0]
    );
    assert_eq!(
        p.events
            .iter()
            .filter(|e| e.reason == "AggregatorPodReplaced")
            .count(),
        1
    );

    // The replacement (on a live node) is Ready: Ready again, nothing more deleted.
    w.aggregators = vec![aggregator_pod("fm-aggregator-2", "edge-b")];
    w.all_ready("2026-01-01T00:01:02Z");
    let p = w.step(&nodes(failed), "2026-01-01T00:01:03Z");
    assert!(
        p.delete
            .iter()
            .all(|d| !d.name.starts_with("fm-aggregator"))
    );
    assert!(!p.events.iter().any(|e| e.reason == "AggregatorPodReplaced"));
    assert_eq!(cond(&p.status, Ready).0, "True");
}

#[test]
fn an_aggregator_that_never_started_on_a_failed_node_waits_until_the_node_is_closed() {
    let healthy = nodes(Health::Healthy);
    let mut w = World::ready_on(&healthy, T0);
    // edge-a is silent, and kube-scheduler (which does not know) bound a rollout's new aggregator pod to it: the
    // kubelet never acknowledged it. Deleting it would only have its replacement bound there again.
    let failed = Health::Failed(FailureReason::LeaseExpired { silent_s: 21 });
    let mut unstarted = aggregator_pod("fm-aggregator-new", "edge-a");
    unstarted.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Pending".into()),
        ..Default::default()
    });
    w.instant_rollout = false;
    w.aggregators = vec![
        with_digest(aggregator_pod("fm-aggregator-old", "edge-b"), "older"),
        with_digest(unstarted, &w.digest()),
    ];
    let mut n = nodes(failed);
    let a = n.iter().position(|n| n.name == "edge-a").expect("edge-a");
    let deleted = |p: &Plan| {
        p.delete
            .iter()
            .filter(|d| d.name == "fm-aggregator-new")
            .count()
    };
    for now in ["2026-01-01T00:01:00Z", "2026-01-01T00:01:01Z"] {
        let p = w.step(&n, now);
        // The variant that was on edge-a moves at the first step and serves from then on.
        w.all_ready(now);
        assert_eq!(deleted(&p), 0, "{:?}", p.delete);
        assert!(!p.events.iter().any(|e| e.reason == "AggregatorPodReplaced"));
        let held = p.aggregator_held.as_deref().unwrap_or_default();
        assert!(
            held.contains("never started") && held.contains("edge-a"),
            "{held}"
        );
        // The rollout waits: the old replica serves, and Ready says why the new one does not yet.
        let c = p.status.condition(Ready).expect("ready condition");
        if now.ends_with("01Z") {
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("False", "AggregatorConfigStale")
            );
            assert!(c.message.contains("never started"), "{}", c.message);
        }
    }
    // Kubernetes' NoExecute health taint alone does not close the node (every pod tolerates it for 300 s) ...
    let taint = |effect: &str| k8s_openapi::api::core::v1::Taint {
        key: "node.kubernetes.io/unreachable".into(),
        effect: effect.into(),
        ..Default::default()
    };
    n[a].taints.push(taint("NoExecute"));
    assert_eq!(deleted(&w.step(&n, "2026-01-01T00:01:30Z")), 0);
    // ... its NoSchedule twin does: the replacement now goes elsewhere, so the pod is deleted, once.
    n[a].taints.push(taint("NoSchedule"));
    let p = w.step(&n, "2026-01-01T00:01:31Z");
    assert_eq!(deleted(&p), 1, "{:?}", p.delete);
    assert!(p.delete.iter().all(|d| d.force));
    // Cordoning closes a node too.
    let mut cordoned = nodes(Health::Failed(FailureReason::NotReady));
    cordoned[a].unschedulable = true;
    let mut unstarted = aggregator_pod("fm-aggregator-new", "edge-a");
    unstarted.status = None;
    w.aggregators = vec![aggregator_pod("fm-aggregator-old", "edge-b"), unstarted];
    assert_eq!(deleted(&w.step(&cordoned, "2026-01-01T00:02:00Z")), 1);
}

#[test]
fn only_ready_aggregators_on_live_nodes_serve() {
    let failed = Health::Failed(FailureReason::NotReady);
    let n = nodes(failed);
    let by_name: BTreeMap<&str, &NodeInfo> = n.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut unready = aggregator_pod("unready", "edge-b");
    unready.status = None;
    let mut terminating = aggregator_pod("terminating", "edge-b");
    terminating.metadata.deletion_timestamp = Some(Time(at(T0)));
    let pods = [
        with_digest(aggregator_pod("serving", "edge-b"), "new"),
        with_digest(aggregator_pod("serving-old", "edge-c"), "old"),
        aggregator_pod("no-digest", "edge-c"),
        with_digest(unready, "new"),
        with_digest(terminating, "old"),
        with_digest(aggregator_pod("on-failed-node", "edge-a"), "new"),
        with_digest(aggregator_pod("on-vanished-node", "edge-zz"), "new"),
    ];
    let w = World::new();
    let input = Inputs {
        ensemble: &w.ens,
        valid: validate(
            &w.ens,
            Ok((&w.manifest, fixtures::MANIFEST)),
            &crate::config::OperatorConfig::default().host_path_prefixes,
        ),
        nodes: &n,
        pods: &[],
        services: &[],
        aggregator_pods: &pods,
        config: &w.cfg,
        now: at(T0),
    };
    let mut out = Plan::default();
    aggregator::judge(&input, &by_name, &mut out);
    let deleted: Vec<&str> = out.delete.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(deleted, ["on-failed-node", "on-vanished-node"]);
    assert!(out.delete.iter().all(|d| d.force));
    assert_eq!(
        served::aggregators(&pods, &by_name, "new"),
        served::AggregatorServing {
            current: 1,
            stale: 2,
            leaving: 1
        },
        "a pod without the digest annotation serves an unknown (so not the current) config; a terminating one of \
         another config is leaving, not serving"
    );

    // With only the unready one left, the ensemble says why it is not Ready.
    let healthy = nodes(Health::Healthy);
    let mut w = World::ready_on(&healthy, T0);
    let mut agg = aggregator_pod("fm-aggregator-1", "edge-b");
    agg.status = None;
    w.aggregators = vec![agg];
    let p = w.step(&healthy, T0);
    assert_eq!(cond(&p.status, Ready), ("False", "AggregatorUnavailable"));
}

#[test]
fn ready_waits_until_every_serving_aggregator_serves_the_current_config() {
    let healthy = nodes(Health::Healthy);
    let mut w = World::ready_on(&healthy, T0);
    let p = w.step(&healthy, T0);
    assert_eq!(cond(&p.status, Ready), ("True", "AllVariantsServing"));
    let old = w.digest();

    // topK changes: the config (and its digest) change; the Deployment has not rolled out yet.
    w.instant_rollout = false;
    w.ens.spec.top_k = 2;
    w.ens.metadata.generation = Some(2);
    let new = w.digest();
    assert_ne!(old, new);
    let p = w.step(&healthy, "2026-01-01T00:01:00Z");
    assert_eq!(
        p.aggregator.as_ref().map(|a| a.digest.as_str()),
        Some(new.as_str())
    );
    let ready = p.status.condition(Ready).expect("ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "AggregatorConfigStale")
    );
    assert!(
        ready
            .message
            .contains("1 aggregator replica(s) serve an older config, 0 the current one")
            && ready.message.contains(&new[..12]),
        "{}",
        ready.message
    );
    assert_eq!(
        cond(&p.status, Degraded),
        ("False", "AllVariantsServing"),
        "the old config still answers: not degraded"
    );
    assert_eq!(cond(&p.status, Progressing), ("True", "AggregatorRollout"));

    // A new replica serves the new config while the old one still serves the old: still not Ready.
    w.aggregators.push(with_digest(
        aggregator_pod("fm-aggregator-2", "edge-c"),
        &new,
    ));
    let p = w.step(&healthy, "2026-01-01T00:01:05Z");
    assert_eq!(cond(&p.status, Ready), ("False", "AggregatorConfigStale"));

    // The old replica is terminating but not gone: the Service may still route to it, so still not Ready.
    for p in &mut w.aggregators {
        if p.name_any() != "fm-aggregator-2" {
            p.metadata.deletion_timestamp = Some(Time(at("2026-01-01T00:01:07Z")));
        }
    }
    let p = w.step(&healthy, "2026-01-01T00:01:08Z");
    let ready = p.status.condition(Ready).expect("ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "AggregatorConfigStale")
    );
    assert!(
        ready
            .message
            .contains("1 aggregator replica(s) serve an older config, 1 the current one"),
        "{}",
        ready.message
    );

    // The old replica is gone: Ready.
    w.aggregators.retain(|p| p.name_any() == "fm-aggregator-2");
    let p = w.step(&healthy, "2026-01-01T00:01:10Z");
    assert_eq!(cond(&p.status, Ready), ("True", "AllVariantsServing"));
    assert_eq!(cond(&p.status, Progressing), ("False", "Stable"));
}

#[test]
fn a_failed_apply_keeps_ready_false_until_an_apply_succeeds() {
    let healthy = nodes(Health::Healthy);
    let mut w = World::ready_on(&healthy, T0);
    let mut p = w.step(&healthy, T0);
    assert_eq!(cond(&p.status, Ready).0, "True");
    let old = w.ens.status.clone().expect("status");
    let t1 = at("2026-01-01T00:02:00Z");
    status::apply_failed(&old, "applying ConfigMap fm-aggregator: denied", t1, &mut p);
    let ready = p.status.condition(Ready).expect("ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ApplyFailed")
    );
    assert!(ready.message.contains("denied"), "{}", ready.message);
    assert_eq!(ready.last_transition_time.0, t1);
    assert_eq!(cond(&p.status, Progressing), ("True", "ApplyFailed"));
    assert_eq!(
        cond(&p.status, Degraded),
        ("False", "AllVariantsServing"),
        "what serves did not change"
    );
    let warnings = |p: &Plan| {
        p.events
            .iter()
            .filter(|e| e.reason == "ApplyFailed" && e.warning)
            .count()
    };
    assert_eq!(warnings(&p), 1);

    // The next reconcile fails the same way: the status keeps its transition time, no second Event.
    w.ens.status = Some(p.status.clone());
    let old = p.status.clone();
    let mut p = w.step(&healthy, "2026-01-01T00:02:05Z");
    status::apply_failed(
        &old,
        "applying ConfigMap fm-aggregator: denied",
        at("2026-01-01T00:02:05Z"),
        &mut p,
    );
    let ready = p.status.condition(Ready).expect("ready");
    assert_eq!(
        (ready.status.as_str(), ready.last_transition_time.0),
        ("False", t1)
    );
    assert_eq!(warnings(&p), 0);

    // An apply that succeeds: Ready again from the plan alone.
    let p = w.step(&healthy, "2026-01-01T00:02:10Z");
    assert_eq!(cond(&p.status, Ready), ("True", "AllVariantsServing"));
}
