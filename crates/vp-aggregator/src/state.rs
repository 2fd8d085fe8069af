//! The aggregator's live state: the current config snapshot (config + manifest + combiner + endpoints), swapped
//! atomically when the config file changes, and each variant's up/down health shared across reloads.

use crate::metrics::Metrics;
use crate::outlier::{Outlier, Policy, Verdict};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;
use vp_core::{AggregatorConfig, Combiner, ConfigError, InputSpec, Manifest, ManifestError};

/// Why a config could not be (re)loaded, or the server could not start.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Config(PathBuf, ConfigError),
    #[error("{0}: {1}")]
    Manifest(PathBuf, ManifestError),
    #[error("start-up failed: {0}")]
    Metrics(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Whether a variant currently answers: its probe state (set by probes and by refused requests) and its outlier
/// state (set by timeouts and errors, see [`crate::outlier`]).
#[derive(Debug)]
pub struct Health {
    up: AtomicBool,
    outlier: Mutex<Outlier>,
}

impl Health {
    fn new() -> Self {
        Self {
            up: AtomicBool::new(true),
            outlier: Mutex::new(Outlier::default()),
        }
    }

    /// Up and not ejected: requests are sent to it.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst) && !self.with_outlier(|o| o.is_ejected())
    }

    /// Skipped after repeated timeouts or errors until the prober re-admits it.
    pub fn is_ejected(&self) -> bool {
        self.with_outlier(|o| o.is_ejected())
    }

    fn with_outlier<T>(&self, f: impl FnOnce(&mut Outlier) -> T) -> T {
        match self.outlier.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

/// One configured variant server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    /// Family index (bit in subset masks).
    pub index: usize,
    pub base_url: String,
    pub infer_url: String,
    pub ready_url: String,
    pub health: Arc<Health>,
}

/// An immutable view of one version of the config file.
#[derive(Debug)]
pub struct Snapshot {
    pub config: AggregatorConfig,
    pub manifest: Manifest,
    pub combiner: Combiner,
    pub spec: InputSpec,
    pub model_name: String,
    pub endpoints: Vec<Endpoint>,
    /// Mask of all configured variants (an answer from fewer is degraded).
    pub configured_mask: u64,
    /// [`vp_core::config_digest`] of the config and manifest bytes this snapshot was built from.
    pub digest: String,
    source: (Vec<u8>, Vec<u8>),
}

impl Snapshot {
    /// Mask of the endpoints currently up.
    pub fn up_mask(&self) -> u64 {
        self.endpoints
            .iter()
            .filter(|e| e.health.is_up())
            .fold(0, |m, e| m | (1u64 << e.index))
    }

    /// Names of the variants in `mask`, in family order.
    pub fn names(&self, mask: u64) -> Vec<String> {
        self.manifest
            .variants
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1u64 << i) != 0)
            .map(|(_, v)| v.name.clone())
            .collect()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| LoadError::Read(path.to_path_buf(), e))
}

/// Reads, parses and validates the config at `path` and the manifest it names.
pub fn load_snapshot(path: &Path, max_batch: usize) -> Result<Snapshot, LoadError> {
    let config_bytes = read(path)?;
    let config = AggregatorConfig::from_yaml(&String::from_utf8_lossy(&config_bytes))
        .map_err(|e| LoadError::Config(path.to_path_buf(), e))?;
    let mpath = config.manifest_path(path);
    let manifest_bytes = read(&mpath)?;
    let manifest = Manifest::from_yaml(&String::from_utf8_lossy(&manifest_bytes))
        .map_err(|e| LoadError::Manifest(mpath, e))?;
    config
        .validate(&manifest)
        .map_err(|e| LoadError::Config(path.to_path_buf(), e))?;
    let endpoints = config
        .variants
        .iter()
        .filter_map(|v| {
            let base = v.url.trim_end_matches('/').to_string();
            Some(Endpoint {
                name: v.name.clone(),
                index: manifest.variant_index(&v.name)?,
                infer_url: format!("{base}/v2/models/{}/infer", v.name),
                ready_url: format!("{base}/v2/health/ready"),
                base_url: base,
                health: Arc::new(Health::new()),
            })
        })
        .collect::<Vec<_>>();
    let configured_mask = endpoints.iter().fold(0, |m, e| m | (1u64 << e.index));
    Ok(Snapshot {
        combiner: config.combiner(&manifest),
        spec: InputSpec::from_manifest(&manifest, max_batch),
        model_name: config.model_name(&manifest).to_string(),
        endpoints,
        configured_mask,
        digest: vp_core::config_digest(&config_bytes, &manifest_bytes),
        source: (config_bytes, manifest_bytes),
        config,
        manifest,
    })
}

/// The current snapshot plus the health of every endpoint, shared by handlers, the prober and the watcher.
pub struct Live {
    current: RwLock<Arc<Snapshot>>,
    /// Health by (name, base URL), so a reload that keeps an endpoint keeps its state.
    health: Mutex<HashMap<(String, String), Arc<Health>>>,
    metrics: Arc<Metrics>,
}

impl Live {
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>) -> Self {
        let live = Self {
            current: RwLock::new(Arc::new(snapshot)),
            health: Mutex::new(HashMap::new()),
            metrics,
        };
        let s = live.snapshot();
        live.adopt_health(&s);
        live.refresh_gauges();
        live
    }

    /// The config snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn adopt_health(&self, s: &Snapshot) {
        if let Ok(mut h) = self.health.lock() {
            for e in &s.endpoints {
                h.insert((e.name.clone(), e.base_url.clone()), e.health.clone());
            }
        }
    }

    /// Swaps in a new snapshot, carrying over the health of endpoints that did not change.
    fn replace(&self, mut s: Snapshot) {
        if let Ok(h) = self.health.lock() {
            for e in &mut s.endpoints {
                if let Some(old) = h.get(&(e.name.clone(), e.base_url.clone())) {
                    e.health = old.clone();
                }
            }
        }
        self.adopt_health(&s);
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(s),
            Err(p) => *p.into_inner() = Arc::new(s),
        }
        self.refresh_gauges();
    }

    /// Records a variant as up or down; logs transitions.
    pub fn set_up(&self, e: &Endpoint, up: bool) {
        let was = e.health.up.swap(up, Ordering::SeqCst);
        if was != up {
            if up {
                tracing::info!(variant = %e.name, url = %e.base_url, "variant is up");
            } else {
                tracing::warn!(variant = %e.name, url = %e.base_url, "variant is down; skipping it");
            }
            self.refresh_gauges();
        }
    }

    /// Records the outcome of one request to a variant; ejects it after the configured run of failures.
    pub fn record_reply(&self, e: &Endpoint, ok: bool) {
        let snap = self.snapshot();
        let policy = Policy {
            failures: snap.config.outlier_failures,
            base_ejection: Duration::from_millis(snap.config.outlier_ejection_ms),
        };
        if ok {
            e.health.with_outlier(Outlier::success);
            return;
        }
        let others_serving = snap
            .endpoints
            .iter()
            .any(|o| o.name != e.name && o.health.is_up());
        let verdict = e
            .health
            .with_outlier(|o| o.failure(Instant::now(), policy, others_serving));
        if verdict == Verdict::Spared {
            tracing::warn!(variant = %e.name, url = %e.base_url, failures = policy.failures,
                "variant failed repeatedly but is the last one serving; not ejected");
        }
        if let Verdict::Ejected(period) = verdict {
            tracing::warn!(variant = %e.name, url = %e.base_url, ejected_ms = period.as_millis() as u64,
                failures = policy.failures, "variant failed repeatedly; ejected");
            self.metrics
                .ejections
                .with_label_values(&[e.name.as_str()])
                .inc();
            self.refresh_gauges();
        }
    }

    /// Records a passed readiness probe: marks the variant up and re-admits it if its ejection is over.
    pub fn probe_passed(&self, e: &Endpoint) {
        if e.health.with_outlier(|o| o.probe_passed(Instant::now())) {
            tracing::info!(variant = %e.name, url = %e.base_url, "ejection over and probe passed; re-admitted");
            self.refresh_gauges();
        }
        self.set_up(e, true);
    }

    /// Recomputes the availability gauges from the current snapshot.
    pub fn refresh_gauges(&self) {
        let s = self.snapshot();
        let m = &self.metrics;
        m.variant_up.reset();
        for e in &s.endpoints {
            m.variant_up
                .with_label_values(&[e.name.as_str()])
                .set(i64::from(e.health.is_up()));
        }
        let up = s.up_mask();
        m.available.set(i64::from(up.count_ones()));
        m.expected_accuracy.set(
            s.manifest
                .expected_accuracy(up, s.config.top_k)
                .unwrap_or(0.0),
        );
    }
}

/// Re-reads the config file (and the manifest it names) every second; a changed, valid pair replaces the
/// snapshot, an invalid one is logged and counted and the old one stays in force.
pub async fn watch_config(live: Arc<Live>, path: PathBuf, max_batch: usize) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<(Vec<u8>, Vec<u8>)> = None;
    loop {
        tick.tick().await;
        let current = live.snapshot();
        let Ok(config_bytes) = std::fs::read(&path) else {
            continue;
        };
        let manifest_bytes = std::fs::read(current.config.manifest_path(&path)).unwrap_or_default();
        let seen = (config_bytes, manifest_bytes);
        if seen == current.source || last_error.as_ref() == Some(&seen) {
            continue;
        }
        let p = path.clone();
        match tokio::task::spawn_blocking(move || load_snapshot(&p, max_batch)).await {
            Ok(Ok(s)) => {
                tracing::info!(config = %path.display(), variants = s.endpoints.len(), digest = %s.digest, "config reloaded");
                live.metrics.reloads.with_label_values(&["ok"]).inc();
                last_error = None;
                live.replace(s);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "config change rejected; keeping the previous config");
                live.metrics.reloads.with_label_values(&["error"]).inc();
                last_error = Some(seen);
            }
            Err(e) => tracing::error!(error = %e, "config reload task failed"),
        }
    }
}
