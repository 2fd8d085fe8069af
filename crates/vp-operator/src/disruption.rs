//! The failure detector with disruption awareness, as a pure state machine (time is an argument): it turns
//! what the operator sees of each node at one tick into a verdict per node — healthy, failed (move its
//! variants), or held (leave them) — modelled on the node lifecycle controller's zone states.
//!
//! Rules:
//! - Every failure signal goes through the same grace on the operator's clock: a node fails when its Lease has
//!   not been renewed for longer than the grace, or its Ready condition has not been True for longer than the
//!   grace (a kubelet restart, NotReady for a few seconds, moves nothing). A deleted Node fails at once.
//! - Nodes are grouped in zones (`topology.kubernetes.io/zone`). A zone is `Normal`, `PartialDisruption` (more
//!   than `unhealthy_threshold` of its nodes failed) or `FullDisruption` (all failed). Nothing moves off a node
//!   of a disrupted zone, whatever the cluster size: when most devices of a site go silent together, the link
//!   or the control plane is the likelier cause, and moving would kill pods that still serve.
//! - Nothing moves while the operator's own view is stale (its API calls fail or its watches went silent).
//! - A failure is acted on only once it is confirmed: at least two renewal intervals after the node's last
//!   sign of life (so every other node of the zone had the chance to renew after it went silent) and while no
//!   other node of the zone is overdue. Otherwise the first of several nodes silenced by one outage would be
//!   moved before the others are seen to be silent too.
//! - When a pause ends, every node's failure clock starts again, so a node that has not come back yet gets a
//!   full grace; then moves resume under a token bucket (`eviction_rate` nodes per second, `eviction_burst`),
//!   which starts empty after a pause.

use crate::health::{FailureReason, Health, Hold, Liveness};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The knobs (operator flags).
#[derive(Clone, Debug, PartialEq)]
pub struct Knobs {
    /// A zone is disrupted when more than this share of its nodes failed at once (0..1).
    pub unhealthy_threshold: f64,
    /// How often nodes renew their Lease (the kubelet's 10 s).
    pub renew_interval: Duration,
    /// A node whose Lease is silent for longer than this is overdue (may be failing).
    pub overdue_after: Duration,
    /// Nodes whose variants may start moving per second in a zone.
    pub eviction_rate: f64,
    /// Nodes whose variants may start moving at once in a zone.
    pub eviction_burst: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            unhealthy_threshold: 0.5,
            renew_interval: Duration::from_secs(10),
            overdue_after: Duration::from_secs(11),
            eviction_rate: 1.0,
            eviction_burst: 10,
        }
    }
}

impl Knobs {
    /// Checks the values; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.unhealthy_threshold > 0.0 && self.unhealthy_threshold < 1.0) {
            return Err(format!(
                "--unhealthy-zone-threshold must be between 0 and 1 (exclusive), got {}",
                self.unhealthy_threshold
            ));
        }
        if !(self.eviction_rate.is_finite() && self.eviction_rate > 0.0) {
            return Err(format!(
                "--eviction-rate must be a positive number of nodes per second, got {}",
                self.eviction_rate
            ));
        }
        if self.eviction_burst == 0 {
            return Err("--eviction-burst must be at least 1".into());
        }
        if self.overdue_after <= self.renew_interval {
            return Err(format!(
                "--node-overdue-after ({:?}) must exceed the lease renewal interval ({:?})",
                self.overdue_after, self.renew_interval
            ));
        }
        Ok(())
    }

    /// The youngest failure acted on for a grace: the grace, but at least one renewal interval after every
    /// other node of the zone would be overdue.
    pub fn confirm_after(&self, grace: Duration) -> Duration {
        grace.max(self.renew_interval + self.overdue_after)
    }
}

/// A zone's state, as the node lifecycle controller names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ZoneState {
    /// At most the threshold share of the nodes failed: failed nodes' variants move.
    Normal,
    /// More than the threshold share failed, not all: nothing moves.
    PartialDisruption,
    /// Every node failed: nothing moves.
    FullDisruption,
}

impl ZoneState {
    /// The name used in status, Events, logs and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::PartialDisruption => "PartialDisruption",
            Self::FullDisruption => "FullDisruption",
        }
    }

    /// The `vp_operator_disruption_state` gauge value (0, 1, 2).
    pub fn gauge(self) -> i64 {
        match self {
            Self::Normal => 0,
            Self::PartialDisruption => 1,
            Self::FullDisruption => 2,
        }
    }

    /// Whether moves are paused in this state.
    pub fn paused(self) -> bool {
        self != Self::Normal
    }
}

/// The state of a zone with `failed` of `total` nodes failed.
pub fn zone_state(failed: usize, total: usize, threshold: f64) -> ZoneState {
    if failed == 0 || total == 0 {
        ZoneState::Normal
    } else if failed >= total {
        ZoneState::FullDisruption
    } else if share(failed, total) > threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

fn share(part: usize, whole: usize) -> f64 {
    // Node counts are far below 2^52: exact in f64.
    let p = u32::try_from(part).map_or(f64::MAX, f64::from);
    let w = u32::try_from(whole).map_or(f64::MAX, f64::from);
    p / w
}

/// What the detector is told about one node at one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeObs {
    /// Its zone (empty: no zone label).
    pub zone: String,
    /// Its liveness.
    pub live: Liveness,
}

/// One reported change of a node's verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// Node name.
    pub node: String,
    /// The new verdict.
    pub to: Health,
    /// For a failure: how long the node's Lease had been silent (the detection latency).
    pub silent_for: Option<Duration>,
}

/// One reported change of a zone's state.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneChange {
    /// The zone.
    pub zone: String,
    /// Its new state.
    pub to: ZoneState,
    /// Failed nodes in it.
    pub failed: usize,
    /// Nodes in it.
    pub total: usize,
}

/// What changed at one tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tick {
    /// Node verdicts that changed, in node-name order.
    pub transitions: Vec<Transition>,
    /// Zone states that changed.
    pub zones: Vec<ZoneChange>,
    /// Some(stale) when the view turned stale or fresh.
    pub view: Option<bool>,
}

/// What one node's signals say, before the zone and the rate limit are considered.
#[derive(Clone, Debug, PartialEq)]
enum Signal {
    Fine,
    /// Not failed yet, but a renewal is late or Ready is not True.
    Overdue,
    /// Past the grace; `age`: how long on the operator's clock (since the failure clock last started).
    Failed {
        reason: FailureReason,
        age: Duration,
    },
}

#[derive(Debug)]
struct NodeMem {
    /// When (operator clock) the Ready condition was first seen not True, in the current stretch.
    not_ready_since: Option<Instant>,
    verdict: Health,
    /// Its failure was granted a token (its variants may move) and is still going on.
    granted: bool,
}

#[derive(Debug)]
struct ZoneMem {
    state: ZoneState,
    /// When the zone's last pause ended: failure clocks restart there.
    resumed_at: Option<Instant>,
    tokens: f64,
    refilled: Instant,
}

/// The detector for one grace: per-node and per-zone memory.
#[derive(Debug)]
pub struct Detector {
    grace: Duration,
    knobs: Knobs,
    nodes: HashMap<String, NodeMem>,
    zones: BTreeMap<String, ZoneMem>,
    stale: bool,
    /// When the view last became fresh again: failure clocks restart there.
    resumed_at: Option<Instant>,
}

impl Detector {
    /// A detector for nodes judged with `grace`.
    pub fn new(grace: Duration, knobs: Knobs) -> Self {
        Self {
            grace,
            knobs,
            nodes: HashMap::new(),
            zones: BTreeMap::new(),
            stale: false,
            resumed_at: None,
        }
    }

    /// The current verdict on every known node.
    pub fn verdicts(&self) -> BTreeMap<String, Health> {
        self.nodes
            .iter()
            .map(|(n, m)| (n.clone(), m.verdict.clone()))
            .collect()
    }

    /// Every known zone's state.
    pub fn zone_states(&self) -> BTreeMap<String, ZoneState> {
        self.zones
            .iter()
            .map(|(z, m)| (z.clone(), m.state))
            .collect()
    }

    /// Whether the view is stale (every move paused).
    pub fn view_stale(&self) -> bool {
        self.stale
    }

    /// Feeds one tick: the time, whether the operator's view is fresh, and every node (nodes missing are
    /// forgotten). Returns what changed.
    pub fn observe(
        &mut self,
        now: Instant,
        view_fresh: bool,
        nodes: &BTreeMap<String, NodeObs>,
    ) -> Tick {
        let mut tick = Tick::default();
        self.nodes.retain(|n, _| nodes.contains_key(n));
        for (name, obs) in nodes {
            let mem = self.nodes.entry(name.clone()).or_insert(NodeMem {
                not_ready_since: None,
                verdict: Health::Healthy,
                granted: false,
            });
            if obs.live.ready == Some(true) {
                mem.not_ready_since = None;
            } else {
                mem.not_ready_since.get_or_insert(now);
            }
        }
        if view_fresh == self.stale {
            self.stale = !view_fresh;
            tick.view = Some(self.stale);
            if view_fresh {
                self.resumed_at = Some(now);
                for z in self.zones.values_mut() {
                    z.tokens = 0.0;
                    z.refilled = now;
                }
            }
        }
        let mut by_zone: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, obs) in nodes {
            by_zone.entry(obs.zone.as_str()).or_default().push(name);
        }
        self.zones.retain(|z, _| by_zone.contains_key(z.as_str()));
        let mut signals: BTreeMap<&str, Signal> = BTreeMap::new();
        // Zone -> (failed, overdue, total) after this tick's state change.
        let mut counts: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
        for (zone, members) in &by_zone {
            let sig = self.zone_tick(zone, members, nodes, now, &mut tick);
            let failed = sig
                .iter()
                .filter(|s| matches!(s, Signal::Failed { .. }))
                .count();
            let overdue = sig.iter().filter(|s| **s == Signal::Overdue).count();
            counts.insert(zone, (failed, overdue, members.len()));
            signals.extend(members.iter().copied().zip(sig));
        }
        // Verdicts, in node-name order (tokens go to the first names when short).
        let confirm = self.knobs.confirm_after(self.grace);
        for (name, obs) in nodes {
            let sig = signals.remove(name.as_str()).unwrap_or(Signal::Fine);
            let zone = obs.zone.as_str();
            let (failed, overdue, total) = counts.get(zone).copied().unwrap_or_default();
            let (Some(zm), Some(mem)) = (self.zones.get_mut(zone), self.nodes.get_mut(name)) else {
                continue;
            };
            let verdict = match sig {
                Signal::Fine | Signal::Overdue => {
                    mem.granted = false;
                    Health::Healthy
                }
                Signal::Failed { reason, age } => {
                    let hold = if self.stale {
                        Some(Hold::ViewStale)
                    } else if zm.state.paused() {
                        Some(Hold::Disruption {
                            zone: zone.to_string(),
                            state: zm.state.as_str(),
                            failed,
                            total,
                        })
                    } else if mem.granted || reason == FailureReason::Gone {
                        None
                    } else if age < confirm {
                        Some(Hold::Confirming)
                    } else if overdue > 0 {
                        Some(Hold::ZoneUnsettled { overdue })
                    } else if zm.tokens >= 1.0 {
                        zm.tokens -= 1.0;
                        None
                    } else {
                        Some(Hold::RateLimited)
                    };
                    match hold {
                        None => {
                            mem.granted = true;
                            Health::Failed(reason)
                        }
                        Some(h) => Health::Held(reason, h),
                    }
                }
            };
            if !same_kind(&mem.verdict, &verdict) {
                tick.transitions.push(Transition {
                    node: name.clone(),
                    silent_for: match verdict {
                        Health::Healthy => None,
                        _ => obs.live.lease_silent_for,
                    },
                    to: verdict.clone(),
                });
            }
            mem.verdict = verdict;
        }
        tick
    }

    /// One zone's tick: refills its bucket, judges its nodes' signals, moves its state (restarting failure
    /// clocks when a pause ends) and returns the signals in `members` order.
    fn zone_tick(
        &mut self,
        zone: &str,
        members: &[&str],
        nodes: &BTreeMap<String, NodeObs>,
        now: Instant,
        tick: &mut Tick,
    ) -> Vec<Signal> {
        let burst = f64::from(self.knobs.eviction_burst);
        let zm = self.zones.entry(zone.to_string()).or_insert(ZoneMem {
            state: ZoneState::Normal,
            resumed_at: None,
            tokens: burst,
            refilled: now,
        });
        let refill =
            self.knobs.eviction_rate * now.saturating_duration_since(zm.refilled).as_secs_f64();
        zm.tokens = (zm.tokens + refill).min(burst);
        zm.refilled = now;
        let old = zm.state;
        let judge = |clip: Option<Instant>| -> Vec<Signal> {
            members
                .iter()
                .map(|n| match (nodes.get(*n), self.nodes.get(*n)) {
                    (Some(o), Some(m)) => signal(&o.live, m, now, clip, self.grace, &self.knobs),
                    _ => Signal::Fine,
                })
                .collect()
        };
        let failed_of = |sig: &[Signal]| {
            sig.iter()
                .filter(|s| matches!(s, Signal::Failed { .. }))
                .count()
        };
        let zone_resumed = self.zones.get(zone).and_then(|z| z.resumed_at);
        let mut sig = judge(self.resumed_at.max(zone_resumed));
        let threshold = self.knobs.unhealthy_threshold;
        let mut state = zone_state(failed_of(&sig), members.len(), threshold);
        let mut resumed = None;
        if old.paused() && !state.paused() {
            // The pause ends: every failure clock of the zone starts again.
            resumed = Some(now);
            sig = judge(self.resumed_at.max(resumed));
            state = zone_state(failed_of(&sig), members.len(), threshold);
        }
        if state.paused() && !old.paused() {
            for n in members {
                if let Some(m) = self.nodes.get_mut(*n) {
                    m.granted = false;
                }
            }
        }
        if let Some(zm) = self.zones.get_mut(zone) {
            if resumed.is_some() {
                zm.resumed_at = resumed;
                zm.tokens = 0.0;
            }
            zm.state = state;
        }
        if state != old {
            tick.zones.push(ZoneChange {
                zone: zone.to_string(),
                to: state,
                failed: failed_of(&sig),
                total: members.len(),
            });
        }
        sig
    }
}

/// One node's signal at `now`, with failure clocks started no earlier than `clip`.
fn signal(
    live: &Liveness,
    mem: &NodeMem,
    now: Instant,
    clip: Option<Instant>,
    grace: Duration,
    knobs: &Knobs,
) -> Signal {
    if live.gone {
        return Signal::Failed {
            reason: FailureReason::Gone,
            age: Duration::MAX,
        };
    }
    let since_clip = clip.map_or(Duration::MAX, |c| now.saturating_duration_since(c));
    let not_ready = mem
        .not_ready_since
        .map(|s| now.saturating_duration_since(s).min(since_clip));
    let silent = live.lease_silent_for.map(|s| s.min(since_clip));
    if let Some(age) = not_ready.filter(|a| *a > grace) {
        return Signal::Failed {
            reason: FailureReason::NotReady,
            age,
        };
    }
    if let (Some(age), Some(raw)) = (silent.filter(|s| *s > grace), live.lease_silent_for) {
        return Signal::Failed {
            reason: FailureReason::LeaseExpired {
                silent_s: raw.as_secs(),
            },
            age,
        };
    }
    if not_ready.is_some() || silent.is_some_and(|s| s > knobs.overdue_after) {
        Signal::Overdue
    } else {
        Signal::Fine
    }
}

/// Whether two verdicts are the same state (a growing silence is not a new transition).
fn same_kind(a: &Health, b: &Health) -> bool {
    use std::mem::discriminant as d;
    match (a, b) {
        (Health::Healthy, Health::Healthy) => true,
        (Health::Failed(x), Health::Failed(y)) => d(x) == d(y),
        (Health::Held(x, hx), Health::Held(y, hy)) => d(x) == d(y) && d(hx) == d(hy),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
