//! Node health as the operator sees it: what is known of a node's liveness at one moment ([`Liveness`]) and
//! the verdict the failure detector ([`crate::disruption`]) reaches on it ([`Health`]): healthy, failed (its
//! variants move), or failed but held (its variants stay where they are for now, and the hold says why).

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
    /// The node looks failed, but nothing moves off it now: the hold says why (a disruption, a stale view,
    /// the eviction rate limit, or the failure is not confirmed yet).
    Held(FailureReason, Hold),
}

impl Health {
    /// The failure, moved or held (None: healthy).
    pub fn failure(&self) -> Option<&FailureReason> {
        match self {
            Self::Healthy => None,
            Self::Failed(r) | Self::Held(r, _) => Some(r),
        }
    }
}

/// Why the variants on a failed node are not moved now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The operator cannot trust its view: the API server does not answer or its watches went silent.
    ViewStale,
    /// Too many nodes of the node's zone failed at once: the likelier cause is the link or the control plane.
    Disruption {
        /// The zone (`topology.kubernetes.io/zone`; empty: nodes without the label).
        zone: String,
        /// `PartialDisruption` or `FullDisruption`.
        state: &'static str,
        /// Failed nodes in the zone.
        failed: usize,
        /// Nodes in the zone.
        total: usize,
    },
    /// The failure is younger than the confirmation window (every other node of the zone gets two renewal
    /// intervals to show it is alive, so that a zone-wide outage is recognised as one).
    Confirming,
    /// Other nodes of the zone are overdue too: waiting until they renew or fail.
    ZoneUnsettled {
        /// Overdue nodes in the zone.
        overdue: usize,
    },
    /// The eviction rate limit (nodes per second) is used up.
    RateLimited,
}

impl Hold {
    /// Short CamelCase label (metric label, condition reason detail).
    pub fn label(&self) -> &'static str {
        match self {
            Self::ViewStale => "ViewStale",
            Self::Disruption { .. } => "ZoneDisruption",
            Self::Confirming => "Confirming",
            Self::ZoneUnsettled { .. } => "ZoneUnsettled",
            Self::RateLimited => "RateLimited",
        }
    }

    /// Whether this hold is a pause of all moves (a disruption or a stale view) rather than a short wait.
    pub fn is_pause(&self) -> bool {
        matches!(self, Self::ViewStale | Self::Disruption { .. })
    }
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ViewStale => write!(
                f,
                "moves paused: the operator's view is stale (API server not answering or watches silent)"
            ),
            Self::Disruption {
                zone,
                state,
                failed,
                total,
            } => write!(
                f,
                "moves paused: zone {zone:?} in {state} ({failed}/{total} nodes failed at once)"
            ),
            Self::Confirming => write!(f, "failure not confirmed yet"),
            Self::ZoneUnsettled { overdue } => write!(
                f,
                "waiting for {overdue} overdue node(s) of the zone to renew or fail"
            ),
            Self::RateLimited => write!(f, "waiting for the eviction rate limit"),
        }
    }
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
