//! Remembers what the operator last applied, so that a reconcile skips server-side applies that would change
//! nothing. Every pod update of an ensemble triggers a reconcile; without this each one re-applied all of the
//! ensemble's Services and aggregator objects (8 writes for 5 variants), which was most of the API server's
//! work at scale.
//!
//! An entry holds the hash of the applied object, the version of the object the API server returned (its
//! `generation` where it has one, else its `resourceVersion`), and when. An apply is skipped only when the
//! desired object hashes the same, the live object still has that version (nobody edited or deleted it since),
//! and the entry is younger than `max_age` (the resync period re-applies everything anyway).
//! The memo is pure bookkeeping (the clock and the live versions are passed in); [`ssa`] does the applying.

pub mod ssa;

use crate::hash::fnv1a;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Identifies an applied object: kind, namespace, name.
pub type Key = (&'static str, String, String);

#[derive(Debug)]
struct Entry {
    hash: u64,
    version: Option<String>,
    at: Instant,
}

/// The memo. Cheap to share: one mutex around a map, held only for a lookup or an insert.
#[derive(Debug)]
pub struct Applied {
    max_age: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
}

/// Hash of an object's serialized form (what would be sent).
pub fn digest<T: serde::Serialize>(obj: &T) -> Option<u64> {
    serde_json::to_vec(obj).ok().map(|b| fnv1a(&b))
}

/// The version of a live object that changes when someone changes what the operator set: `generation` for
/// objects that have one (a Deployment's status updates leave it alone), else `resourceVersion`.
pub fn version(meta: &ObjectMeta) -> Option<String> {
    meta.generation
        .map(|g| format!("generation {g}"))
        .or_else(|| meta.resource_version.clone())
}

impl Applied {
    /// An empty memo whose entries expire after `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an object with this hash must be applied, given the live object's version (None: it does not
    /// exist): never applied, changed since, edited or deleted by someone else, or the entry expired.
    pub fn needed(&self, key: &Key, hash: u64, live: Option<&str>, now: Instant) -> bool {
        let Ok(entries) = self.entries.lock() else {
            return true;
        };
        !entries.get(key).is_some_and(|e| {
            e.hash == hash
                && live.is_some()
                && e.version.as_deref() == live
                && now.saturating_duration_since(e.at) < self.max_age
        })
    }

    /// Records a successful apply and the version the API server returned.
    pub fn record(&self, key: Key, hash: u64, version: Option<String>, now: Instant) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                key,
                Entry {
                    hash,
                    version,
                    at: now,
                },
            );
        }
    }

    /// Forgets one object (its apply failed, or it was deleted on purpose).
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
    fn skips_only_the_same_unedited_object_within_max_age() {
        let memo = Applied::new(Duration::from_secs(300));
        let t0 = Instant::now();
        let v1 = Some("17");
        assert!(memo.needed(&key("a"), 1, v1, t0), "never applied");
        memo.record(key("a"), 1, v1.map(String::from), t0);
        let soon = t0 + Duration::from_secs(10);
        assert!(!memo.needed(&key("a"), 1, v1, soon));
        assert!(
            memo.needed(&key("a"), 2, v1, soon),
            "desired object changed"
        );
        assert!(
            memo.needed(&key("a"), 1, Some("18"), soon),
            "edited by someone else"
        );
        assert!(
            memo.needed(&key("a"), 1, None, soon),
            "deleted by someone else"
        );
        assert!(memo.needed(&key("b"), 1, v1, soon), "another object");
        assert!(
            memo.needed(&key("a"), 1, v1, t0 + Duration::from_secs(300)),
            "expired: the resync re-applies"
        );
        memo.forget(&key("a"));
        assert!(memo.needed(&key("a"), 1, v1, soon));
    }

    #[test]
    fn forgets_an_ensembles_objects() {
        let memo = Applied::new(Duration::from_secs(300));
        let t0 = Instant::now();
        let v = || Some("1".to_string());
        memo.record(key("e1-v0"), 1, v(), t0);
        memo.record(key("e1-agg"), 1, v(), t0);
        memo.record(key("e10-v0"), 1, v(), t0);
        memo.record(("Service", "other".into(), "e1-v0".into()), 1, v(), t0);
        memo.forget_prefixed("ns", "e1-");
        assert_eq!(memo.len(), 2);
        assert!(memo.needed(&key("e1-v0"), 1, Some("1"), t0));
        assert!(!memo.needed(&key("e10-v0"), 1, Some("1"), t0));
    }

    #[test]
    fn versions_prefer_generation() {
        let with_gen = ObjectMeta {
            generation: Some(3),
            resource_version: Some("99".into()),
            ..ObjectMeta::default()
        };
        assert_eq!(version(&with_gen).as_deref(), Some("generation 3"));
        let without = ObjectMeta {
            resource_version: Some("99".into()),
            ..ObjectMeta::default()
        };
        assert_eq!(version(&without).as_deref(), Some("99"));
    }

    #[test]
    fn digest_follows_content() {
        let a = digest(&serde_json::json!({"a": 1})).expect("hash");
        assert_eq!(Some(a), digest(&serde_json::json!({"a": 1})));
        assert_ne!(Some(a), digest(&serde_json::json!({"a": 2})));
    }
}
