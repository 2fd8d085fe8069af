//! Remembers what the operator last applied, so that a reconcile skips server-side applies that would change
//! nothing. Every pod update of an ensemble triggers a reconcile; without this each one re-applied all of the
//! ensemble's Services and aggregator objects (8 writes for 5 variants), which is most of the API server's
//! work at scale. An entry holds the hash of the applied object and when it was applied; it expires after
//! `max_age` so that a periodic resync still re-applies everything and undoes edits made by hand.
//! Pure bookkeeping: the clock is passed in.

use crate::hash::fnv1a;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Identifies an applied object: kind, namespace, name.
pub type Key = (&'static str, String, String);

/// The memo. Cheap to share: one mutex around a map, held only for a lookup or an insert.
#[derive(Debug)]
pub struct Applied {
    max_age: Duration,
    entries: Mutex<HashMap<Key, (u64, Instant)>>,
}

/// Hash of an object's serialized form (what would be sent).
pub fn digest<T: serde::Serialize>(obj: &T) -> Option<u64> {
    serde_json::to_vec(obj).ok().map(|b| fnv1a(&b))
}

impl Applied {
    /// An empty memo whose entries expire after `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an object with this hash must be applied (never applied, changed since, or expired).
    pub fn needed(&self, key: &Key, hash: u64, now: Instant) -> bool {
        let Ok(entries) = self.entries.lock() else {
            return true;
        };
        !matches!(entries.get(key), Some((h, at)) if *h == hash && now.saturating_duration_since(*at) < self.max_age)
    }

    /// Records a successful apply.
    pub fn record(&self, key: Key, hash: u64, now: Instant) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(key, (hash, now));
        }
    }

    /// Forgets one object (it was found missing or deleted, so the next reconcile applies it again).
    pub fn forget(&self, key: &Key) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }

    /// Forgets every object of a namespace whose name starts with `prefix` (an ensemble being deleted).
    pub fn forget_prefixed(&self, namespace: &str, prefix: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|(_, ns, name), _| !(ns == namespace && name.starts_with(prefix)));
        }
    }

    /// Number of remembered objects (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        ("Service", "ns".into(), name.into())
    }

    #[test]
    fn skips_only_the_same_object_within_max_age() {
        let memo = Applied::new(Duration::from_secs(300));
        let t0 = Instant::now();
        assert!(memo.needed(&key("a"), 1, t0), "never applied");
        memo.record(key("a"), 1, t0);
        assert!(!memo.needed(&key("a"), 1, t0 + Duration::from_secs(10)));
        assert!(memo.needed(&key("a"), 2, t0), "changed");
        assert!(memo.needed(&key("b"), 1, t0), "another object");
        assert!(
            memo.needed(&key("a"), 1, t0 + Duration::from_secs(300)),
            "expired: the resync re-applies"
        );
        memo.forget(&key("a"));
        assert!(memo.needed(&key("a"), 1, t0));
    }

    #[test]
    fn forgets_an_ensembles_objects() {
        let memo = Applied::new(Duration::from_secs(300));
        let t0 = Instant::now();
        memo.record(key("e1-v0"), 1, t0);
        memo.record(key("e1-agg"), 1, t0);
        memo.record(key("e10-v0"), 1, t0);
        memo.record(("Service", "other".into(), "e1-v0".into()), 1, t0);
        memo.forget_prefixed("ns", "e1-");
        assert_eq!(memo.len(), 2);
        assert!(memo.needed(&key("e1-v0"), 1, t0));
        assert!(!memo.needed(&key("e10-v0"), 1, t0));
    }

    #[test]
    fn digest_follows_content() {
        let a = digest(&serde_json::json!({"a": 1})).expect("hash");
        assert_eq!(Some(a), digest(&serde_json::json!({"a": 1})));
        assert_ne!(Some(a), digest(&serde_json::json!({"a": 2})));
    }
}
