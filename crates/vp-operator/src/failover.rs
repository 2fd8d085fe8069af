//! The fast failure path: a shared view of node liveness (Node Ready conditions and Lease renewals, timed on
//! the operator's clock) and the detector task that turns each node failure or recovery into one reconcile of
//! the ensembles it concerns, within a tick (250 ms) of the grace running out.
//!
//! A dead node sends no events, so detection cannot wait for a watch event: the task re-judges every node each
//! tick from in-memory stores (no API calls), per distinct grace in use, and acts once per transition.

use crate::health::{FailureDetector, Health, Liveness, judge_all, mass_silence};
use crate::metrics::Metrics;
use crate::observe;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use vp_api::labels::ENSEMBLE;
use vp_api::{DEFAULT_NODE_GRACE, VariantEnsemble};

/// How often the detector re-judges nodes.
pub const TICK: Duration = Duration::from_millis(250);

/// Node liveness as seen from the operator's clock.
pub struct NodeView {
    nodes: Store<Node>,
    leases: Store<Lease>,
    /// Node -> (last renewTime seen, when it was first seen with that value).
    clock: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl NodeView {
    /// A view over the node and node-lease stores.
    pub fn new(nodes: Store<Node>, leases: Store<Lease>) -> Self {
        Self {
            nodes,
            leases,
            clock: Mutex::new(HashMap::new()),
        }
    }

    /// Notes Lease renewals since the last call.
    pub fn refresh(&self) {
        let now = Instant::now();
        let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        let leases = self.leases.state();
        let live: BTreeSet<String> = leases.iter().map(|l| l.name_any()).collect();
        clock.retain(|k, _| live.contains(k));
        for lease in leases {
            let renew = lease
                .spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.to_string());
            let entry = clock
                .entry(lease.name_any())
                .or_insert((renew.clone(), now));
            if entry.0 != renew {
                *entry = (renew, now);
            }
        }
    }

    /// Every node in the store.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.state()
    }

    /// Liveness of every node in the store.
    pub fn liveness(&self) -> BTreeMap<String, Liveness> {
        let clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        self.nodes
            .state()
            .iter()
            .map(|n| {
                let name = n.name_any();
                let silent = clock.get(&name).map(|(_, at)| at.elapsed());
                (name, observe::liveness(n, silent))
            })
            .collect()
    }
}

/// Grace of an ensemble.
pub fn grace_of(e: &VariantEnsemble) -> Duration {
    u64::try_from(e.spec.failover.node_grace_seconds)
        .map_or(DEFAULT_NODE_GRACE, Duration::from_secs)
}

/// Runs the detector until the channel closes: each tick, judges nodes and sends the ensembles to reconcile.
pub async fn detect(
    view: Arc<NodeView>,
    ensembles: Store<VariantEnsemble>,
    pods: Store<Pod>,
    metrics: Metrics,
    tx: mpsc::Sender<ObjectRef<VariantEnsemble>>,
) {
    let mut detectors: BTreeMap<Duration, FailureDetector> = BTreeMap::new();
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut known_ensembles: BTreeSet<(String, String)> = BTreeSet::new();
    let mut warned = false;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        view.refresh();
        let live = view.liveness();
        let ens = ensembles.state();
        let by_key: BTreeMap<(String, String), &Arc<VariantEnsemble>> = ens
            .iter()
            .map(|e| ((e.namespace().unwrap_or_default(), e.name_any()), e))
            .collect();
        // Deleted ensembles are not reconciled again (no finalizer): drop their gauges here.
        let current: BTreeSet<(String, String)> = by_key.keys().cloned().collect();
        for (ns, name) in known_ensembles.difference(&current) {
            metrics.forget_ensemble(ns, name);
        }
        known_ensembles = current;
        // Node -> ensembles with a variant pod there.
        let mut on_node: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        for p in pods.state() {
            if let (Some(node), Some(e)) = (observe::pod_node(&p), p.labels().get(ENSEMBLE)) {
                on_node
                    .entry(node.to_string())
                    .or_default()
                    .insert((p.namespace().unwrap_or_default(), e.clone()));
            }
        }
        // Ensembles waiting for a node (some variant unplaced or not serving).
        let waiting: Vec<&(String, String)> = by_key
            .iter()
            .filter(|(_, e)| {
                e.status
                    .as_ref()
                    .is_none_or(|s| s.available_variants < s.desired_variants)
            })
            .map(|(k, _)| k)
            .collect();
        let mut triggers: BTreeSet<(String, String)> = BTreeSet::new();
        let new_nodes: Vec<String> = live
            .keys()
            .filter(|n| !known.contains(*n))
            .cloned()
            .collect();
        if !new_nodes.is_empty() && !known.is_empty() {
            tracing::info!(nodes = ?new_nodes, "new nodes");
            triggers.extend(waiting.iter().map(|k| (*k).clone()));
        }
        known = live.keys().cloned().collect();

        if !mass_silence(&live, DEFAULT_NODE_GRACE) {
            warned = false;
        } else if !std::mem::replace(&mut warned, true) {
            tracing::warn!(
                "most node leases are silent at once: suspecting the control plane, not the nodes; lease silence alone moves no variant until this clears"
            );
        }
        let mut graces: BTreeSet<Duration> = ens.iter().map(|e| grace_of(e)).collect();
        graces.insert(DEFAULT_NODE_GRACE);
        detectors.retain(|g, _| graces.contains(g));
        for g in graces {
            let det = detectors.entry(g).or_default();
            for t in det.observe(&live, g) {
                let affected: Vec<&(String, String)> = on_node
                    .get(&t.node)
                    .into_iter()
                    .flatten()
                    .filter(|k| by_key.get(*k).is_some_and(|e| grace_of(e) == g))
                    .collect();
                match &t.to {
                    Health::Failed(reason) => {
                        tracing::warn!(node = %t.node, %reason, grace_s = g.as_secs(), ensembles = affected.len(), "node failed");
                        if !affected.is_empty() {
                            metrics
                                .node_failures
                                .with_label_values(&[reason.label()])
                                .inc();
                            if let Some(s) = t.silent_for {
                                metrics.detection.observe(s.as_secs_f64());
                            }
                        }
                        triggers.extend(affected.into_iter().cloned());
                    }
                    Health::Healthy => {
                        tracing::info!(node = %t.node, "node healthy again");
                        triggers.extend(
                            waiting
                                .iter()
                                .filter(|k| by_key.get(**k).is_some_and(|e| grace_of(e) == g))
                                .map(|k| (*k).clone()),
                        );
                    }
                }
            }
        }
        for (ns, name) in triggers {
            if tx.send(ObjectRef::new(&name).within(&ns)).await.is_err() {
                return;
            }
        }
    }
}

/// Judges every node for one grace (used by reconciles).
pub fn judged(view: &NodeView, grace: Duration) -> BTreeMap<String, Health> {
    judge_all(&view.liveness(), grace)
}
