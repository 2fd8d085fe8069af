//! Outlier ejection (as Envoy's outlier detection): a variant that times out or errors `failures` times in a
//! row is ejected, i.e. skipped by requests, for an ejection period that doubles with each ejection not
//! followed by a success (capped at 16x). After the period the prober re-admits it once it passes a readiness
//! probe. This catches a variant that still passes readiness but hangs on inference, which would otherwise make
//! every request wait for the whole deadline. Like Envoy's `max_ejection_percent`, ejection is bounded: the last
//! variant still serving is never ejected (it is spared and stays in use), because an aggregator that skips every
//! variant answers nothing, and losing the service is exactly what variant parallelism must never do. Pure logic;
//! the clock is passed in.

use std::time::{Duration, Instant};

/// When to eject and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub failures: u32,
    pub base_ejection: Duration,
}

/// Most doublings of the ejection period.
const MAX_MULTIPLIER: u32 = 16;

/// What a recorded failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Counted,
    Ejected(Duration),
    /// The streak reached the policy, but no other variant is serving: not ejected.
    Spared,
}

/// The outlier state of one variant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outlier {
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

impl Outlier {
    /// A reply arrived in time: the failure streak and the backoff start over.
    pub fn success(&mut self) {
        self.consecutive = 0;
        if self.ejected_until.is_none() {
            self.ejections = 0;
        }
    }

    /// A timeout or error; ejects the variant when the streak reaches the policy, unless `others_serving` is
    /// false (it is the last variant requests can go to).
    pub fn failure(&mut self, now: Instant, p: Policy, others_serving: bool) -> Verdict {
        if self.ejected_until.is_some() {
            return Verdict::Counted;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        if self.consecutive < p.failures.max(1) {
            return Verdict::Counted;
        }
        if !others_serving {
            return Verdict::Spared;
        }
        self.consecutive = 0;
        let multiplier = 1u32 << self.ejections.min(4);
        self.ejections += 1;
        let period = p.base_ejection * multiplier.min(MAX_MULTIPLIER);
        self.ejected_until = Some(now + period);
        Verdict::Ejected(period)
    }

    /// True while ejected (until the prober re-admits it).
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.is_some()
    }

    /// Called after a passed readiness probe: re-admits the variant once its period is over. Returns true if it
    /// was re-admitted now.
    pub fn probe_passed(&mut self, now: Instant) -> bool {
        match self.ejected_until {
            Some(until) if now >= until => {
                self.ejected_until = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        failures: 3,
        base_ejection: Duration::from_secs(5),
    };

    #[test]
    fn ejects_after_n_failures_in_a_row_and_backs_off() {
        let t0 = Instant::now();
        let mut o = Outlier::default();
        assert_eq!(o.failure(t0, P, true), Verdict::Counted);
        o.success();
        assert_eq!(o.failure(t0, P, true), Verdict::Counted);
        assert_eq!(o.failure(t0, P, true), Verdict::Counted);
        assert!(!o.is_ejected(), "a success broke the streak");
        assert_eq!(
            o.failure(t0, P, true),
            Verdict::Ejected(Duration::from_secs(5))
        );
        assert!(o.is_ejected());
        // Probes during the period do not re-admit it.
        assert!(!o.probe_passed(t0 + Duration::from_secs(4)));
        assert!(o.probe_passed(t0 + Duration::from_secs(5)));
        assert!(!o.is_ejected());
        // Failing again at once: the period doubles.
        let t1 = t0 + Duration::from_secs(6);
        for _ in 0..2 {
            assert_eq!(o.failure(t1, P, true), Verdict::Counted);
        }
        assert_eq!(
            o.failure(t1, P, true),
            Verdict::Ejected(Duration::from_secs(10))
        );
    }

    #[test]
    fn backoff_is_capped_and_reset_by_a_success() {
        let t = Instant::now();
        let mut o = Outlier::default();
        let mut last = Duration::ZERO;
        for _ in 0..8 {
            for _ in 0..2 {
                o.failure(t, P, true);
            }
            if let Verdict::Ejected(d) = o.failure(t, P, true) {
                last = d;
            }
            assert!(o.probe_passed(t + Duration::from_secs(3600)));
        }
        assert_eq!(last, Duration::from_secs(5 * 16));
        o.success();
        for _ in 0..2 {
            o.failure(t, P, true);
        }
        assert_eq!(
            o.failure(t, P, true),
            Verdict::Ejected(Duration::from_secs(5))
        );
    }

    #[test]
    fn the_last_serving_variant_is_spared_then_ejected_once_another_serves() {
        let t = Instant::now();
        let mut o = Outlier::default();
        for _ in 0..2 {
            assert_eq!(o.failure(t, P, false), Verdict::Counted);
        }
        for _ in 0..5 {
            assert_eq!(o.failure(t, P, false), Verdict::Spared);
            assert!(!o.is_ejected());
        }
        // Another variant serves again: the streak still counts, so the next failure ejects.
        assert_eq!(
            o.failure(t, P, true),
            Verdict::Ejected(Duration::from_secs(5))
        );
        assert!(o.is_ejected());
    }
}
