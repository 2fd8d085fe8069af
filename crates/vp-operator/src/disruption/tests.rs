use super::*;

const G: Duration = vp_api::DEFAULT_NODE_GRACE;
const STEP: f64 = 0.25;

/// A simulated cluster on a simulated clock: each node renews its lease every 10 s (with its own phase) while
/// alive, and reports Ready as set.
struct Sim {
    t0: Instant,
    now: f64,
    /// name -> (zone, last renewal (s), alive, ready, phase (s))
    nodes: BTreeMap<String, (String, f64, bool, bool, f64)>,
    det: Detector,
    fresh: bool,
}

impl Sim {
    fn new(grace: Duration, knobs: Knobs) -> Self {
        Self {
            t0: Instant::now(),
            now: 0.0,
            nodes: BTreeMap::new(),
            det: Detector::new(grace, knobs),
            fresh: true,
        }
    }

    /// Adds `n` nodes in `zone`, their renewal phases spread over the 10 s interval.
    fn zone(mut self, zone: &str, n: usize) -> Self {
        for i in 0..n {
            let phase = 10.0 * f64::from(u32::try_from(i).unwrap_or(0))
                / f64::from(u32::try_from(n).unwrap_or(1));
            self.nodes.insert(
                format!("{zone}-{i}"),
                (zone.into(), self.now, true, true, phase),
            );
        }
        self
    }

    fn set(&mut self, node: &str, alive: bool, ready: bool) {
        let n = self.nodes.get_mut(node).expect("node");
        n.2 = alive;
        n.3 = ready;
        if alive {
            n.1 = self.now;
        }
    }

    fn obs(&self) -> BTreeMap<String, NodeObs> {
        self.nodes
            .iter()
            .map(|(name, (zone, last, _, ready, _))| {
                (
                    name.clone(),
                    NodeObs {
                        zone: zone.clone(),
                        live: Liveness {
                            ready: Some(*ready),
                            lease_silent_for: Some(Duration::from_secs_f64(self.now - last)),
                            gone: false,
                        },
                    },
                )
            })
            .collect()
    }

    /// Advances to `until` seconds in ticks of 0.25 s; returns every transition seen.
    fn run(&mut self, until: f64) -> Vec<(f64, Transition)> {
        let mut out = Vec::new();
        while self.now + STEP <= until + 1e-9 {
            let prev = self.now;
            self.now += STEP;
            for (_, last, alive, _, phase) in self.nodes.values_mut() {
                // Renew when a 10 s boundary (shifted by the phase) was crossed.
                let crossed =
                    ((self.now - *phase) / 10.0).floor() > ((prev - *phase) / 10.0).floor();
                if *alive && crossed {
                    *last = self.now;
                }
            }
            let at = self.t0 + Duration::from_secs_f64(self.now);
            let obs = self.obs();
            let tick = self.det.observe(at, self.fresh, &obs);
            out.extend(tick.transitions.into_iter().map(|t| (self.now, t)));
        }
        out
    }

    fn verdict(&self, node: &str) -> Health {
        self.det
            .verdicts()
            .get(node)
            .cloned()
            .unwrap_or(Health::Healthy)
    }
}

fn moved(ts: &[(f64, Transition)]) -> Vec<(f64, String)> {
    ts.iter()
        .filter(|(_, t)| matches!(t.to, Health::Failed(_)))
        .map(|(at, t)| (*at, t.node.clone()))
        .collect()
}

fn hold_of(h: &Health) -> Option<&'static str> {
    match h {
        Health::Held(_, hold) => Some(hold.label()),
        _ => None,
    }
}

#[test]
fn zone_states_for_every_cluster_size() {
    let t = 0.5;
    assert_eq!(zone_state(0, 0, t), ZoneState::Normal);
    assert_eq!(zone_state(0, 3, t), ZoneState::Normal);
    // One node: its failure is a full disruption (nowhere to move anyway; nothing is killed).
    assert_eq!(zone_state(1, 1, t), ZoneState::FullDisruption);
    // Two nodes: one failed is half, not more than half.
    assert_eq!(zone_state(1, 2, t), ZoneState::Normal);
    assert_eq!(zone_state(2, 2, t), ZoneState::FullDisruption);
    // Three nodes: two failed is a disruption (the old guard needed four nodes).
    assert_eq!(zone_state(1, 3, t), ZoneState::Normal);
    assert_eq!(zone_state(2, 3, t), ZoneState::PartialDisruption);
    assert_eq!(zone_state(3, 3, t), ZoneState::FullDisruption);
    assert_eq!(zone_state(5, 10, t), ZoneState::Normal);
    assert_eq!(zone_state(6, 10, t), ZoneState::PartialDisruption);
    assert_eq!(zone_state(9, 10, 0.95), ZoneState::Normal);
    for s in [ZoneState::PartialDisruption, ZoneState::FullDisruption] {
        assert!(s.paused());
    }
    assert!(!ZoneState::Normal.paused());
    assert_eq!(
        [
            ZoneState::Normal,
            ZoneState::PartialDisruption,
            ZoneState::FullDisruption
        ]
        .map(ZoneState::gauge),
        [0, 1, 2]
    );
}

#[test]
fn knobs_are_checked() {
    assert!(Knobs::default().validate().is_ok());
    for bad in [
        Knobs {
            unhealthy_threshold: 1.0,
            ..Knobs::default()
        },
        Knobs {
            unhealthy_threshold: 0.0,
            ..Knobs::default()
        },
        Knobs {
            unhealthy_threshold: f64::NAN,
            ..Knobs::default()
        },
        Knobs {
            eviction_rate: 0.0,
            ..Knobs::default()
        },
        Knobs {
            eviction_rate: f64::INFINITY,
            ..Knobs::default()
        },
        Knobs {
            eviction_burst: 0,
            ..Knobs::default()
        },
        Knobs {
            overdue_after: Duration::from_secs(10),
            ..Knobs::default()
        },
    ] {
        let err = bad.validate().expect_err("rejected");
        assert!(err.starts_with("--"), "{err}");
    }
    let k = Knobs::default();
    assert_eq!(
        k.confirm_after(Duration::from_secs(12)),
        Duration::from_secs(21)
    );
    assert_eq!(
        k.confirm_after(Duration::from_secs(60)),
        Duration::from_secs(60)
    );
}

#[test]
fn heartbeat_jitter_is_never_flagged() {
    // Renewals every 10 s with +-4 s jitter: silence never exceeds 14 s, sampled every 0.5 s.
    let mut d = Detector::new(G, Knobs::default());
    let t0 = Instant::now();
    let mut now = 0.0;
    for period in [3.0, -4.0, 1.5, 4.0, -2.5, 0.0, 3.9, -3.9] {
        let interval = 10.0 + period;
        let mut t = 0.0;
        while t < interval {
            let nodes = BTreeMap::from([(
                "a".to_string(),
                NodeObs {
                    zone: String::new(),
                    live: Liveness {
                        ready: Some(true),
                        lease_silent_for: Some(Duration::from_secs_f64(t)),
                        gone: false,
                    },
                },
            )]);
            let tick = d.observe(t0 + Duration::from_secs_f64(now), true, &nodes);
            assert!(tick.transitions.is_empty(), "flagged at silence {t}s");
            t += 0.5;
            now += 0.5;
        }
    }
}

#[test]
fn a_dead_node_moves_once_confirmed_and_comes_back_healthy() {
    let mut s = Sim::new(G, Knobs::default()).zone("z", 3);
    s.run(30.0);
    s.set("z-0", false, true);
    let ts = s.run(60.0);
    let m = moved(&ts);
    assert_eq!(m.len(), 1, "{ts:?}");
    assert_eq!(m[0].1, "z-0");
    // z-0 last renewed at 30 s: failed after the 20 s grace, moved at 21 s (two renewal intervals + 1 s),
    // within one tick.
    assert!((51.0..=51.5).contains(&m[0].0), "moved at {}", m[0].0);
    assert!(ts.iter().any(|(at, t)| t.node == "z-0"
        && hold_of(&t.to) == Some("Confirming")
        && (50.0..=50.5).contains(at)));
    assert_eq!(
        ts.last()
            .and_then(|(_, t)| t.silent_for.map(|d| d.as_secs())),
        Some(21)
    );
    assert!(matches!(
        s.verdict("z-0"),
        Health::Failed(FailureReason::LeaseExpired { silent_s: 30 })
    ));
    // Back: healthy at its first renewal, one transition.
    s.set("z-0", true, true);
    let ts = s.run(61.0);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].1.to, Health::Healthy);
}

#[test]
fn not_ready_for_five_seconds_moves_nothing() {
    let mut s = Sim::new(Duration::from_secs(12), Knobs::default()).zone("z", 3);
    s.run(20.0);
    s.set("z-1", true, false);
    let ts = s.run(25.0);
    assert!(ts.is_empty(), "{ts:?}");
    s.set("z-1", true, true);
    assert!(s.run(60.0).is_empty());
}

#[test]
fn not_ready_beyond_the_grace_fails_on_the_operators_clock() {
    let mut s = Sim::new(Duration::from_secs(12), Knobs::default()).zone("z", 3);
    s.run(20.0);
    // Leases keep renewing (a kubelet that reports NotReady), so only the Ready condition says so.
    s.set("z-1", true, false);
    let ts = s.run(60.0);
    let m = moved(&ts);
    assert_eq!(m.len(), 1, "{ts:?}");
    assert!((41.0..=41.5).contains(&m[0].0), "moved at {}", m[0].0);
    assert_eq!(s.verdict("z-1"), Health::Failed(FailureReason::NotReady));
}

#[test]
fn a_deleted_node_fails_at_once() {
    let mut d = Detector::new(G, Knobs::default());
    let obs = |gone| {
        BTreeMap::from([
            (
                "a".to_string(),
                NodeObs {
                    zone: String::new(),
                    live: Liveness {
                        ready: Some(true),
                        lease_silent_for: Some(Duration::from_secs(1)),
                        gone,
                    },
                },
            ),
            (
                "b".to_string(),
                NodeObs {
                    zone: String::new(),
                    live: Liveness {
                        ready: Some(true),
                        lease_silent_for: Some(Duration::from_secs(1)),
                        gone: false,
                    },
                },
            ),
        ])
    };
    let t0 = Instant::now();
    assert!(d.observe(t0, true, &obs(false)).transitions.is_empty());
    let tick = d.observe(t0 + Duration::from_millis(250), true, &obs(true));
    assert_eq!(tick.transitions.len(), 1);
    assert_eq!(tick.transitions[0].to, Health::Failed(FailureReason::Gone));
    // Forgetting a node is silent.
    let only_b = obs(false).into_iter().filter(|(n, _)| n == "b").collect();
    assert!(
        d.observe(t0 + Duration::from_millis(500), true, &only_b)
            .transitions
            .is_empty()
    );
    assert!(!d.verdicts().contains_key("a"));
}

#[test]
fn a_whole_site_going_silent_moves_nothing_and_comes_back_without_moves() {
    for n in 1..=10 {
        let mut s = Sim::new(Duration::from_secs(12), Knobs::default()).zone("site", n);
        s.run(30.0);
        for i in 0..n {
            s.set(&format!("site-{i}"), false, true);
        }
        let during = s.run(90.0);
        assert!(moved(&during).is_empty(), "{n} nodes: {during:?}");
        assert_eq!(
            s.det.zone_states()["site"],
            ZoneState::FullDisruption,
            "{n} nodes"
        );
        assert!(
            (0..n).all(|i| hold_of(&s.verdict(&format!("site-{i}"))) == Some("ZoneDisruption")),
            "{n} nodes"
        );
        // Back one after another over 8 s (each at its own next renewal): nobody is moved, not even the last.
        for i in 0..n {
            s.set(&format!("site-{i}"), true, true);
            let ts = s.run(s.now + 8.0 / f64::from(u32::try_from(n).unwrap_or(1)));
            assert!(moved(&ts).is_empty(), "{n} nodes, {i} back: {ts:?}");
        }
        let after = s.run(s.now + 60.0);
        assert!(moved(&after).is_empty(), "{n} nodes: {after:?}");
        assert_eq!(s.det.zone_states()["site"], ZoneState::Normal);
        assert!((0..n).all(|i| s.verdict(&format!("site-{i}")) == Health::Healthy));
    }
}

#[test]
fn stragglers_after_a_disruption_get_a_full_grace_then_move_rate_limited() {
    let grace = Duration::from_secs(12);
    let mut s = Sim::new(grace, Knobs::default()).zone("z", 4);
    s.run(30.0);
    for i in 0..4 {
        s.set(&format!("z-{i}"), false, true);
    }
    s.run(70.0);
    assert_eq!(s.det.zone_states()["z"], ZoneState::FullDisruption);
    // Three come back, one stays dead: the pause ends, the straggler's failure clock starts again.
    for i in 0..3 {
        s.set(&format!("z-{i}"), true, true);
    }
    let resumed_at = s.now;
    let ts = s.run(s.now + 40.0);
    let m = moved(&ts);
    assert_eq!(m.len(), 1, "{ts:?}");
    assert_eq!(m[0].1, "z-3");
    // Not before the confirmation window counted from the resume (and the empty bucket refilled).
    assert!(
        m[0].0 >= resumed_at + 21.0,
        "moved {}s after the resume",
        m[0].0 - resumed_at
    );
    assert!(
        m[0].0 <= resumed_at + 22.5,
        "moved {}s after the resume",
        m[0].0 - resumed_at
    );
}

#[test]
fn partial_disruption_pauses_and_one_of_two_still_moves() {
    let mut s = Sim::new(Duration::from_secs(12), Knobs::default()).zone("z", 5);
    s.run(30.0);
    for i in 0..3 {
        s.set(&format!("z-{i}"), false, true);
    }
    let ts = s.run(70.0);
    assert!(moved(&ts).is_empty(), "{ts:?}");
    assert_eq!(s.det.zone_states()["z"], ZoneState::PartialDisruption);
    let Health::Held(
        _,
        Hold::Disruption {
            state,
            failed,
            total,
            ..
        },
    ) = s.verdict("z-0")
    else {
        panic!("held: {:?}", s.verdict("z-0"));
    };
    assert_eq!((state, failed, total), ("PartialDisruption", 3, 5));
    assert!(
        s.verdict("z-0")
            .to_string_for_test()
            .contains("3/5 nodes failed")
    );

    let mut two = Sim::new(Duration::from_secs(12), Knobs::default()).zone("y", 2);
    two.run(30.0);
    two.set("y-0", false, true);
    assert_eq!(
        moved(&two.run(70.0)).len(),
        1,
        "one of two is half: it moves"
    );
}

#[test]
fn zones_are_judged_apart() {
    let mut s = Sim::new(Duration::from_secs(12), Knobs::default())
        .zone("a", 2)
        .zone("b", 3);
    s.run(30.0);
    s.set("a-0", false, true);
    s.set("a-1", false, true);
    s.set("b-0", false, true);
    let ts = s.run(80.0);
    assert_eq!(
        moved(&ts).iter().map(|m| m.1.as_str()).collect::<Vec<_>>(),
        ["b-0"]
    );
    let z = s.det.zone_states();
    assert_eq!(
        (z["a"], z["b"]),
        (ZoneState::FullDisruption, ZoneState::Normal)
    );
}

#[test]
fn a_stale_view_pauses_every_move_and_failures_reconfirm_after() {
    let mut s = Sim::new(Duration::from_secs(12), Knobs::default()).zone("z", 5);
    s.run(30.0);
    s.set("z-0", false, true);
    s.fresh = false;
    let ts = s.run(80.0);
    assert!(moved(&ts).is_empty(), "{ts:?}");
    assert_eq!(hold_of(&s.verdict("z-0")), Some("ViewStale"));
    assert!(s.det.view_stale());
    s.fresh = true;
    let back = s.now;
    let ts = s.run(s.now + 40.0);
    let m = moved(&ts);
    assert_eq!(m.len(), 1, "{ts:?}");
    assert!(
        m[0].0 >= back + 21.0,
        "moved {}s after the view came back",
        m[0].0 - back
    );
    assert!(!s.det.view_stale());
}

#[test]
fn view_changes_are_reported() {
    let mut d = Detector::new(G, Knobs::default());
    let t0 = Instant::now();
    assert_eq!(d.observe(t0, true, &BTreeMap::new()).view, None);
    assert_eq!(d.observe(t0, false, &BTreeMap::new()).view, Some(true));
    assert_eq!(d.observe(t0, false, &BTreeMap::new()).view, None);
    assert_eq!(d.observe(t0, true, &BTreeMap::new()).view, Some(false));
}

#[test]
fn the_eviction_rate_limit_spaces_moves_out() {
    let knobs = Knobs {
        eviction_rate: 0.5,
        eviction_burst: 2,
        ..Knobs::default()
    };
    let mut s = Sim::new(Duration::from_secs(30), knobs).zone("z", 10);
    s.run(30.0);
    // Four nodes that last renewed at the same moment die together.
    for i in 0..4 {
        let n = s.nodes.get_mut(&format!("z-{i}")).expect("node");
        n.4 = 0.0;
    }
    s.run(40.0);
    for i in 0..4 {
        s.set(&format!("z-{i}"), false, true);
    }
    let ts = s.run(90.0);
    let m = moved(&ts);
    assert_eq!(m.len(), 4, "{ts:?}");
    assert_eq!(m[0].0, m[1].0, "the burst moves two at once");
    assert!(m[2].0 - m[1].0 >= 1.9, "then one per 2 s: {m:?}");
    assert!(m[3].0 - m[2].0 >= 1.9, "{m:?}");
    assert!(
        ts.iter()
            .any(|(_, t)| hold_of(&t.to) == Some("RateLimited"))
    );
}

#[test]
fn an_overdue_neighbour_defers_a_move_until_it_renews() {
    let mut s = Sim::new(Duration::from_secs(20), Knobs::default()).zone("z", 4);
    s.run(30.0);
    s.set("z-0", false, true);
    // z-1 (last renewal at 32.5 s) stops renewing too and comes back late at 52.25 s (19.75 s silent, just
    // inside the grace), after z-0's failure would have been confirmed (51 s): z-0 waits for it.
    s.run(41.0);
    s.set("z-1", false, true);
    let ts = s.run(52.25);
    assert!(moved(&ts).is_empty(), "{ts:?}");
    assert!(
        ts.iter()
            .any(|(_, t)| t.node == "z-0" && hold_of(&t.to) == Some("ZoneUnsettled")),
        "{ts:?}"
    );
    s.set("z-1", true, true);
    let ts = s.run(52.5);
    assert_eq!(
        moved(&ts).iter().map(|m| m.1.as_str()).collect::<Vec<_>>(),
        ["z-0"]
    );
}

#[test]
fn ten_of_ten_failing_one_after_another_first_move_then_pause() {
    let mut s = Sim::new(Duration::from_secs(12), Knobs::default()).zone("z", 10);
    s.run(30.0);
    let mut all = Vec::new();
    for i in 0..10 {
        s.set(&format!("z-{i}"), false, true);
        all.extend(s.run(s.now + 6.0));
    }
    all.extend(s.run(s.now + 60.0));
    let m = moved(&all);
    assert!(
        !m.is_empty() && m.len() <= 5,
        "first moves, at most half: {m:?}"
    );
    assert!(
        (0..10).all(|i| matches!(
            s.verdict(&format!("z-{i}")),
            Health::Held(_, Hold::Disruption { .. })
        )),
        "then the pause holds every node"
    );
    assert_eq!(s.det.zone_states()["z"], ZoneState::FullDisruption);
}

/// Display of a verdict's hold, for message checks.
trait ForTest {
    fn to_string_for_test(&self) -> String;
}

impl ForTest for Health {
    fn to_string_for_test(&self) -> String {
        match self {
            Health::Held(r, h) => format!("{r}; {h}"),
            Health::Failed(r) => r.to_string(),
            Health::Healthy => "healthy".into(),
        }
    }
}
