//! The fast failure path: a shared view of node liveness (Node Ready conditions and Lease renewals, timed on
//! the operator's clock) and the detector task that turns each node failure or recovery into one reconcile of
//! the ensembles it concerns, within a tick (250 ms) of the grace running out.
//!
//! A dead node sends no events, so detection cannot wait for a watch event: the task re-judges every node each
//! tick from in-memory stores (no API calls), per distinct grace in use, with the disruption-aware detector
//! ([`crate::disruption`]), publishes the verdicts that reconciles use, and acts once per transition. A probe
//! task and the Lease watch tell whether the view itself can be trusted.

use crate::disruption::{Detector, Knobs, NodeObs, ZoneState};
use crate::health::{FailureReason, Health, Hold, Liveness};
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
/// How often the operator checks that the API server answers it.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Label naming a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Failure detection settings (operator flags).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Zone thresholds, renewal timing, eviction rate limit.
    pub knobs: Knobs,
    /// The view is stale when the API server has not answered for this long (a probe every 2 s, each with this
    /// timeout), or no node Lease update arrived for three renewal intervals while there are Leases.
    pub stale_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            knobs: Knobs::default(),
            stale_after: Duration::from_secs(10),
        }
    }
}

/// Node liveness as seen from the operator's clock, and the detector's verdicts for the reconciles.
pub struct NodeView {
    nodes: Store<Node>,
    leases: Store<Lease>,
    settings: Settings,
    /// Node -> (last renewTime seen, when it was first seen with that value).
    clock: Mutex<HashMap<String, (Option<String>, Instant)>>,
    /// Grace -> node -> verdict, as the detector last decided.
    verdicts: Mutex<BTreeMap<Duration, BTreeMap<String, Health>>>,
    /// When the API server last answered; when a node Lease update last arrived.
    contact: Mutex<(Instant, Instant)>,
}

impl NodeView {
    /// A view over the node and node-lease stores.
    pub fn new(nodes: Store<Node>, leases: Store<Lease>, settings: Settings) -> Self {
        let now = Instant::now();
        Self {
            nodes,
            leases,
            settings,
            clock: Mutex::new(HashMap::new()),
            verdicts: Mutex::new(BTreeMap::new()),
            contact: Mutex::new((now, now)),
        }
    }

    /// Records that the API server answered.
    pub fn api_answered(&self) {
        self.contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0 = Instant::now();
    }

    /// Records that a node Lease update arrived on the watch.
    pub fn lease_event(&self) {
        self.contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1 = Instant::now();
    }

    /// Whether the operator can trust what it sees: the API server answered lately, and the Lease watch
    /// delivered an update lately (live nodes renew every interval) unless there are no Leases.
    pub fn fresh(&self) -> bool {
        let (api, lease) = *self.contact.lock().unwrap_or_else(PoisonError::into_inner);
        let watch_limit = self
            .settings
            .stale_after
            .max(3 * self.settings.knobs.renew_interval);
        api.elapsed() <= self.settings.stale_after
            && (self.leases.state().is_empty() || lease.elapsed() <= watch_limit)
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

    /// Liveness and zone of every node in the store.
    pub fn observe(&self) -> BTreeMap<String, NodeObs> {
        let clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        self.nodes
            .state()
            .iter()
            .map(|n| {
                let name = n.name_any();
                let silent = clock.get(&name).map(|(_, at)| at.elapsed());
                let zone = n.labels().get(ZONE_LABEL).cloned().unwrap_or_default();
                (
                    name,
                    NodeObs {
                        zone,
                        live: observe::liveness(n, silent),
                    },
                )
            })
            .collect()
    }

    fn publish(&self, grace: Duration, verdicts: BTreeMap<String, Health>) {
        self.verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(grace, verdicts);
    }

    fn forget_graces(&self, keep: &BTreeSet<Duration>) {
        self.verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|g, _| keep.contains(g));
    }
}

/// The verdict on every node for one grace (used by reconciles): the detector's, or, for a node or grace it
/// has not judged yet, healthy when the node looks fine and held (not confirmed) otherwise. Reconciles never
/// judge on their own, so the pause and the rate limit hold for them too.
pub fn judged(view: &NodeView, grace: Duration) -> BTreeMap<String, Health> {
    let known = view
        .verdicts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&grace)
        .cloned()
        .unwrap_or_default();
    view.observe()
        .into_iter()
        .map(|(name, obs)| {
            let h = known
                .get(&name)
                .cloned()
                .unwrap_or_else(|| unjudged(&obs.live, grace));
            (name, h)
        })
        .collect()
}

fn unjudged(l: &Liveness, grace: Duration) -> Health {
    let reason = if l.gone {
        Some(FailureReason::Gone)
    } else if l.ready != Some(true) {
        Some(FailureReason::NotReady)
    } else {
        l.lease_silent_for
            .filter(|s| *s > grace)
            .map(|s| FailureReason::LeaseExpired {
                silent_s: s.as_secs(),
            })
    };
    reason.map_or(Health::Healthy, |r| Health::Held(r, Hold::Confirming))
}

/// Checks every [`PROBE_EVERY`] that the API server answers (each call bounded by the stale limit), so that a
/// frozen connection is noticed even when no watch event is due.
pub async fn probe(client: kube::Client, view: Arc<NodeView>) {
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match tokio::time::timeout(view.settings.stale_after, client.apiserver_version()).await {
            Ok(Ok(_)) => view.api_answered(),
            Ok(Err(e)) => tracing::warn!(error = %e, "API server probe failed"),
            Err(_) => tracing::warn!("API server probe timed out"),
        }
    }
}

/// Grace of an ensemble.
pub fn grace_of(e: &VariantEnsemble) -> Duration {
    u64::try_from(e.spec.failover.node_grace_seconds)
        .map_or(DEFAULT_NODE_GRACE, Duration::from_secs)
}

/// Runs the detector until the channel closes: each tick, judges nodes (per grace in use), publishes the
/// verdicts for the reconciles, and sends the ensembles whose nodes changed to reconcile.
pub async fn detect(
    view: Arc<NodeView>,
    ensembles: Store<VariantEnsemble>,
    pods: Store<Pod>,
    metrics: Metrics,
    tx: mpsc::Sender<ObjectRef<VariantEnsemble>>,
) {
    let mut detectors: BTreeMap<Duration, Detector> = BTreeMap::new();
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut known_ensembles: BTreeSet<(String, String)> = BTreeSet::new();
    let mut known_zones: BTreeSet<String> = BTreeSet::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        view.refresh();
        let now = Instant::now();
        let fresh = view.fresh();
        let live = view.observe();
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

        let mut graces: BTreeSet<Duration> = ens.iter().map(|e| grace_of(e)).collect();
        graces.insert(DEFAULT_NODE_GRACE);
        detectors.retain(|g, _| graces.contains(g));
        view.forget_graces(&graces);
        let mut zones: BTreeMap<String, ZoneState> = BTreeMap::new();
        let mut stale = false;
        for g in &graces {
            let det = detectors
                .entry(*g)
                .or_insert_with(|| Detector::new(*g, view.settings.knobs.clone()));
            let tick = det.observe(now, fresh, &live);
            view.publish(*g, det.verdicts());
            stale |= det.view_stale();
            for (z, s) in det.zone_states() {
                let e = zones.entry(z).or_insert(s);
                *e = (*e).max(s);
            }
            if *g == DEFAULT_NODE_GRACE {
                log_changes(&tick);
            }
            for t in tick.transitions {
                let affected: Vec<&(String, String)> = on_node
                    .get(&t.node)
                    .into_iter()
                    .flatten()
                    .filter(|k| by_key.get(*k).is_some_and(|e| grace_of(e) == *g))
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
                    Health::Held(reason, hold) => {
                        tracing::info!(node = %t.node, %reason, %hold, grace_s = g.as_secs(), ensembles = affected.len(), "node failure held");
                        triggers.extend(affected.into_iter().cloned());
                    }
                    Health::Healthy => {
                        tracing::info!(node = %t.node, "node healthy");
                        triggers.extend(affected.into_iter().cloned());
                        triggers.extend(
                            waiting
                                .iter()
                                .filter(|k| by_key.get(**k).is_some_and(|e| grace_of(e) == *g))
                                .map(|k| (*k).clone()),
                        );
                    }
                }
            }
        }
        for z in known_zones.difference(&zones.keys().cloned().collect()) {
            let _ = metrics.disruption.remove_label_values(&[z]);
        }
        for (z, s) in &zones {
            metrics.disruption.with_label_values(&[z]).set(s.gauge());
        }
        known_zones = zones.keys().cloned().collect();
        metrics.view_stale.set(i64::from(stale));
        metrics
            .moves_paused
            .set(i64::from(stale || zones.values().any(|s| s.paused())));
        for (ns, name) in triggers {
            if tx.send(ObjectRef::new(&name).within(&ns)).await.is_err() {
                return;
            }
        }
    }
}

/// Logs zone and view changes (once, from the default grace's detector).
fn log_changes(tick: &crate::disruption::Tick) {
    match tick.view {
        Some(true) => tracing::warn!(
            "the operator's view is stale (API server not answering or node Lease watch silent): no variant moves until it is fresh again"
        ),
        Some(false) => tracing::info!(
            "the operator's view is fresh again; failures are re-confirmed before anything moves"
        ),
        None => {}
    }
    for z in &tick.zones {
        if z.to.paused() {
            tracing::warn!(zone = %z.zone, state = z.to.as_str(), failed = z.failed, total = z.total, "zone disrupted: moves paused there");
        } else {
            tracing::info!(zone = %z.zone, state = z.to.as_str(), failed = z.failed, total = z.total, "zone normal again: moves resume, rate-limited");
        }
    }
}
