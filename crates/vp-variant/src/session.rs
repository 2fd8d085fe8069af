//! Whether the model session still works, for the health probes. A session can load and pass warm-up and
//! still break later (or load and fail every run, e.g. a model whose input does not match the manifest);
//! answering 200 on liveness then would keep a server that answers 500 forever. Every inference records its
//! outcome here, and the probes run a one-sample self-test when the record alone cannot tell (see
//! [`Probe`]), so the kubelet restarts a broken server and the aggregator skips it meanwhile.

use std::sync::Mutex;

/// The record: how many inferences in a row failed, and the last error.
#[derive(Debug, Default)]
pub struct SessionHealth {
    state: Mutex<Record>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Record {
    failures: u32,
    last_error: Option<String>,
}

/// Which probe asks: liveness tests the session on every call (a broken session must be found without
/// traffic); readiness only while the last inference failed (to notice a recovery without waiting for
/// traffic, which the aggregator no longer sends to an unready variant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Live,
    Ready,
}

impl SessionHealth {
    fn with<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Records the outcome of one inference (a request's, the warm-up's or a probe's self-test).
    pub fn record(&self, outcome: Result<(), &str>) {
        self.with(|r| match outcome {
            Ok(()) => *r = Record::default(),
            Err(e) => {
                r.failures = r.failures.saturating_add(1);
                r.last_error = Some(e.to_string());
            }
        });
    }

    /// Whether `probe` should run a self-test now (it runs only if the model is free; a busy model is
    /// working, and its outcome lands here when the run ends).
    pub fn wants_self_test(&self, probe: Probe) -> bool {
        probe == Probe::Live || self.with(|r| r.failures > 0)
    }

    /// `Err(last error)` while the last inference failed.
    pub fn verdict(&self) -> Result<(), String> {
        self.with(|r| match (r.failures, &r.last_error) {
            (0, _) => Ok(()),
            (n, e) => Err(format!(
                "the model session failed {n} time(s) in a row; last error: {}",
                e.as_deref().unwrap_or("unknown")
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_breaks_until_a_success() {
        let h = SessionHealth::default();
        assert_eq!(h.verdict(), Ok(()), "a fresh session is healthy");
        assert!(h.wants_self_test(Probe::Live));
        assert!(
            !h.wants_self_test(Probe::Ready),
            "readiness trusts a clean record"
        );
        h.record(Err("boom"));
        h.record(Err("bang"));
        let e = h.verdict().expect_err("broken");
        assert!(e.contains("2 time(s)") && e.contains("bang"), "{e}");
        assert!(
            h.wants_self_test(Probe::Ready),
            "readiness re-tests a failing session"
        );
        h.record(Ok(()));
        assert_eq!(h.verdict(), Ok(()));
        assert!(!h.wants_self_test(Probe::Ready));
    }
}
