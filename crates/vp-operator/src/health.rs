//! Node health as the operator sees it, and the per-node failure detector.
//!
//! A node is failed when its Ready condition is not True, or when its Lease in `kube-node-lease` has not been
//! renewed for longer than the grace. "Renewed" is judged on the operator's own clock (when it saw `renewTime`
//! change), so clock skew between node and operator cannot flag a healthy node, and the kubelet's normal
//! renewal jitter (10 s +- a few) stays well inside the default 20 s grace. The detector keeps one small state
//! machine per node and reports each transition once, like Akri's node watcher.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What the operator knows about one node's liveness at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Liveness {
    /// The Ready condition's status: Some(true) True, Some(false) False/Unknown, None absent.
    pub ready: Option<bool>,
    /// How long ago (operator clock) the node's Lease renewTime last changed; None without a Lease.
    pub lease_silent_for: Option<Duration>,
    /// The node is being deleted or is gone.
    pub gone: bool,
}

/// The verdict on a node for a given grace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Serving variants is fine.
    Healthy,
    /// Variants must move; the text says why (for status, events and logs).
    Failed(FailureReason),
}

/// Why a node is considered failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// Lease not renewed for longer than the grace.
    LeaseExpired {
        /// Whole seconds of silence.
        silent_s: u64,
    },
    /// Ready condition False or Unknown.
    NotReady,
    /// The Node object is gone or being deleted.
    Gone,
}

impl FailureReason {
    /// Short CamelCase reason, used as metric label and Event reason suffix.
    pub fn label(&self) -> &'static str {
        match self {
            Self::LeaseExpired { .. } => "LeaseExpired",
            Self::NotReady => "NodeNotReady",
            Self::Gone => "NodeGone",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LeaseExpired { silent_s } => write!(f, "node lease not renewed for {silent_s}s"),
            Self::NotReady => write!(f, "node Ready condition is not True"),
            Self::Gone => write!(f, "node deleted"),
        }
    }
}

/// Judges a node: gone beats not-ready beats a silent lease; a node with no Ready condition yet (just
/// registered) counts as not ready.
pub fn judge(l: &Liveness, grace: Duration) -> Health {
    if l.gone {
        return Health::Failed(FailureReason::Gone);
    }
    if l.ready != Some(true) {
        return Health::Failed(FailureReason::NotReady);
    }
    match l.lease_silent_for {
        Some(s) if s > grace => Health::Failed(FailureReason::LeaseExpired {
            silent_s: s.as_secs(),
        }),
        _ => Health::Healthy,
    }
}

/// Smallest number of nodes with a Lease for the mass-silence guard to apply.
pub const MASS_SILENCE_MIN_NODES: usize = 4;

/// Whether more than half of the nodes (with a Lease, at least [`MASS_SILENCE_MIN_NODES`]) are silent beyond
/// the grace at once. Then the likely cause is the control plane or the network, not the nodes (the node
/// lifecycle controller stops evicting in a fully disrupted zone for the same reason), so lease silence alone
/// fails no node; a Ready condition that is not True still does.
pub fn mass_silence(nodes: &BTreeMap<String, Liveness>, grace: Duration) -> bool {
    let with_lease = nodes
        .values()
        .filter(|l| l.lease_silent_for.is_some())
        .count();
    let silent = nodes
        .values()
        .filter(|l| l.lease_silent_for.is_some_and(|s| s > grace))
        .count();
    with_lease >= MASS_SILENCE_MIN_NODES && 2 * silent > with_lease
}

/// Judges every node, applying the mass-silence guard.
pub fn judge_all(nodes: &BTreeMap<String, Liveness>, grace: Duration) -> BTreeMap<String, Health> {
    let guard = mass_silence(nodes, grace);
    nodes
        .iter()
        .map(|(name, l)| {
            let h = if guard {
                judge(
                    &Liveness {
                        lease_silent_for: None,
                        ..l.clone()
                    },
                    grace,
                )
            } else {
                judge(l, grace)
            };
            (name.clone(), h)
        })
        .collect()
}

/// When a healthy node would be judged failed if its lease is not renewed: the time left until then.
pub fn time_to_expiry(l: &Liveness, grace: Duration) -> Option<Duration> {
    match judge(l, grace) {
        Health::Healthy => l.lease_silent_for.map(|s| grace.saturating_sub(s)),
        Health::Failed(_) => None,
    }
}

/// One reported change of a node's health.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// Node name.
    pub node: String,
    /// The new verdict.
    pub to: Health,
    /// For a failure: how long the node had been silent when it was detected (the detection latency).
    pub silent_for: Option<Duration>,
}

/// Per-node state machine: remembers the last verdict per node and reports only changes.
#[derive(Debug, Default)]
pub struct FailureDetector {
    state: HashMap<String, Health>,
}

impl FailureDetector {
    /// Feeds the current liveness of every known node (nodes missing from `nodes` are forgotten) and returns
    /// the transitions since the last call, in node-name order. A node seen for the first time reports a
    /// transition only when it is failed (a healthy newcomer needs no action, except being usable).
    pub fn observe(
        &mut self,
        nodes: &BTreeMap<String, Liveness>,
        grace: Duration,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        self.state.retain(|name, _| nodes.contains_key(name));
        let judged = judge_all(nodes, grace);
        for (name, l) in nodes {
            let now = judged.get(name).cloned().unwrap_or(Health::Healthy);
            let before = self.state.insert(name.clone(), now.clone());
            let changed = match &before {
                None => now != Health::Healthy,
                Some(b) => !same_kind(b, &now),
            };
            if changed {
                let silent_for = match &now {
                    Health::Failed(_) => l.lease_silent_for,
                    Health::Healthy => None,
                };
                out.push(Transition {
                    node: name.clone(),
                    to: now,
                    silent_for,
                });
            }
        }
        out
    }

    /// The last verdict for a node, if known.
    pub fn health(&self, node: &str) -> Option<&Health> {
        self.state.get(node)
    }
}

/// Whether two verdicts are the same state (a growing silence is not a new transition).
fn same_kind(a: &Health, b: &Health) -> bool {
    match (a, b) {
        (Health::Healthy, Health::Healthy) => true,
        (Health::Failed(x), Health::Failed(y)) => {
            std::mem::discriminant(x) == std::mem::discriminant(y)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(ready: Option<bool>, silent: Option<u64>) -> Liveness {
        Liveness {
            ready,
            lease_silent_for: silent.map(Duration::from_secs),
            gone: false,
        }
    }
    const G: Duration = vp_api::DEFAULT_NODE_GRACE;

    #[test]
    fn judges_lease_ready_and_gone() {
        assert_eq!(judge(&live(Some(true), Some(5)), G), Health::Healthy);
        assert_eq!(
            judge(&live(Some(true), Some(20)), G),
            Health::Healthy,
            "exactly the grace is still fine"
        );
        assert_eq!(
            judge(&live(Some(true), Some(21)), G),
            Health::Failed(FailureReason::LeaseExpired { silent_s: 21 })
        );
        assert_eq!(
            judge(&live(Some(false), Some(1)), G),
            Health::Failed(FailureReason::NotReady)
        );
        assert_eq!(
            judge(&live(None, Some(1)), G),
            Health::Failed(FailureReason::NotReady)
        );
        assert_eq!(
            judge(&live(Some(true), None), G),
            Health::Healthy,
            "no lease: Ready decides"
        );
        let gone = Liveness {
            gone: true,
            ..live(Some(true), Some(1))
        };
        assert_eq!(judge(&gone, G), Health::Failed(FailureReason::Gone));
    }

    #[test]
    fn heartbeat_jitter_is_never_flagged() {
        // Renewals every 10 s with +-4 s jitter: silence never exceeds 14 s, sampled every 0.5 s.
        let mut d = FailureDetector::default();
        let jitter = [3.0, -4.0, 1.5, 4.0, -2.5, 0.0, 3.9, -3.9];
        for period in jitter {
            let interval = 10.0 + period;
            let mut t = 0.0;
            while t < interval {
                let nodes = BTreeMap::from([(
                    "a".to_string(),
                    Liveness {
                        ready: Some(true),
                        lease_silent_for: Some(Duration::from_secs_f64(t)),
                        gone: false,
                    },
                )]);
                assert!(d.observe(&nodes, G).is_empty(), "flagged at silence {t}s");
                t += 0.5;
            }
        }
    }

    #[test]
    fn reports_each_transition_once() {
        let mut d = FailureDetector::default();
        let at =
            |s: u64, ready: bool| BTreeMap::from([("a".to_string(), live(Some(ready), Some(s)))]);
        assert!(d.observe(&at(1, true), G).is_empty());
        let t = d.observe(&at(21, true), G);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].silent_for, Some(Duration::from_secs(21)));
        assert!(
            d.observe(&at(22, true), G).is_empty(),
            "still failed: no new transition"
        );
        assert!(d.observe(&at(40, true), G).is_empty());
        let t = d.observe(&at(40, false), G);
        assert_eq!(t.len(), 1, "lease expiry -> not ready is a new reason");
        let t = d.observe(&at(0, true), G);
        assert_eq!(
            t,
            vec![Transition {
                node: "a".into(),
                to: Health::Healthy,
                silent_for: None
            }]
        );
        assert!(
            d.observe(&BTreeMap::new(), G).is_empty(),
            "forgetting a node is silent"
        );
        assert!(d.health("a").is_none());
    }

    #[test]
    fn newcomers_report_only_when_failed() {
        let mut d = FailureDetector::default();
        let nodes = BTreeMap::from([
            ("ok".to_string(), live(Some(true), Some(1))),
            ("bad".to_string(), live(Some(false), None)),
        ]);
        let t = d.observe(&nodes, G);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].node, "bad");
    }

    #[test]
    fn mass_silence_is_not_blamed_on_the_nodes() {
        let many = |silent: usize, total: usize| -> BTreeMap<String, Liveness> {
            (0..total)
                .map(|i| {
                    (
                        format!("n{i}"),
                        live(Some(true), Some(if i < silent { 30 } else { 3 })),
                    )
                })
                .collect()
        };
        // One node of five silent: it fails.
        let one = judge_all(&many(1, 5), G);
        assert!(matches!(
            one["n0"],
            Health::Failed(FailureReason::LeaseExpired { .. })
        ));
        // Three of five silent at once: the control plane is the suspect; nobody fails on silence alone...
        assert!(mass_silence(&many(3, 5), G));
        assert!(
            judge_all(&many(3, 5), G)
                .values()
                .all(|h| *h == Health::Healthy)
        );
        let mut d = FailureDetector::default();
        assert!(d.observe(&many(3, 5), G).is_empty());
        // ...but a node whose Ready condition is not True still does.
        let mut nodes = many(3, 5);
        nodes.insert("n0".into(), live(Some(false), Some(30)));
        assert_eq!(
            judge_all(&nodes, G)["n0"],
            Health::Failed(FailureReason::NotReady)
        );
        // Small clusters: two of three silent still fail (the guard needs at least four nodes).
        assert!(!mass_silence(&many(2, 3), G));
    }

    #[test]
    fn expiry_countdown() {
        assert_eq!(
            time_to_expiry(&live(Some(true), Some(5)), G),
            Some(Duration::from_secs(15))
        );
        assert_eq!(time_to_expiry(&live(Some(false), Some(5)), G), None);
    }
}
