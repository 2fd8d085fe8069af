//! The write gate: every write to the API server passes it first. Leader election closes it the moment this
//! replica may no longer act (its renew deadline ran out), before any standby may take over, so a reconcile
//! that is still running (say, stuck on a frozen connection) cannot write afterwards. Each write that passes
//! is logged at debug level under the target `vp_operator::write` (the audit the leader-election test reads).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Open (writes pass) or closed. Clones share the state.
#[derive(Clone, Debug)]
pub struct Gate(Arc<AtomicBool>);

impl Default for Gate {
    fn default() -> Self {
        Self::open()
    }
}

/// A write refused because this replica no longer leads.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not writing {what}: this replica no longer leads")]
pub struct Closed {
    /// The refused write.
    pub what: String,
}

impl Gate {
    /// An open gate (a replica without leader election, or one that leads).
    pub fn open() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    /// Closes the gate for good: no write passes any more.
    pub fn close(&self) {
        if self.0.swap(false, Ordering::SeqCst) {
            tracing::warn!("write gate closed: this replica no longer writes to the API server");
        }
    }

    /// Whether writes pass.
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Lets one write pass (and logs it), or refuses it.
    pub fn pass(&self, what: impl FnOnce() -> String) -> Result<(), Closed> {
        if self.is_open() {
            tracing::debug!(target: "vp_operator::write", what = %what(), "write");
            Ok(())
        } else {
            Err(Closed { what: what() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_refuses_every_write_for_good() {
        let g = Gate::default();
        let clone = g.clone();
        assert!(g.pass(|| "status".into()).is_ok());
        clone.close();
        assert!(!g.is_open());
        assert_eq!(
            g.pass(|| "pod x".into()),
            Err(Closed {
                what: "pod x".into()
            })
        );
        clone.close();
        assert_eq!(
            g.pass(|| "status".into()).map_err(|e| e.to_string()),
            Err("not writing status: this replica no longer leads".into())
        );
    }
}
