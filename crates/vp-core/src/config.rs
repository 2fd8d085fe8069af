//! The aggregator's config file (schema version 1, documented in docs/dataplane.md): variant endpoints and
//! combine settings. `vpctl run` writes it; in Kubernetes the operator generates it into a ConfigMap.

use crate::combine::{CombineRule, Combiner};
use crate::manifest::Manifest;
use crate::oip::VariantWire;
use crate::topk::validate_k;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a config was rejected.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("aggregator config is not valid YAML for schema v1: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("aggregator config schema_version {0} is not supported (this build reads version 1)")]
    Version(u32),
    #[error("aggregator config is invalid: {0}")]
    Invalid(String),
}

/// One variant server the aggregator fans out to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantEndpoint {
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:9101`.
    pub url: String,
}

/// The aggregator config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    pub schema_version: u32,
    /// Path of the family's ensemble.yaml, relative to the config file's folder or absolute.
    pub manifest: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    #[serde(default = "default_min_variants")]
    pub min_variants: usize,
    #[serde(default)]
    pub combine: CombineRule,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, f64>,
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
    /// A variant that times out or errors this many times in a row is ejected (skipped) for a while.
    #[serde(default = "default_outlier_failures")]
    pub outlier_failures: u32,
    /// First ejection period; each further ejection without a success in between doubles it (at most 16x).
    #[serde(default = "default_outlier_ejection_ms")]
    pub outlier_ejection_ms: u64,
    /// How requests to the variants are encoded: `binary` (Triton's binary tensor extension, the default) or
    /// `json`.
    #[serde(default)]
    pub variant_wire: VariantWire,
    pub variants: Vec<VariantEndpoint>,
}

fn default_top_k() -> usize {
    3
}
fn default_deadline_ms() -> u64 {
    200
}
fn default_min_variants() -> usize {
    1
}
fn default_probe_interval_ms() -> u64 {
    500
}
fn default_probe_timeout_ms() -> u64 {
    300
}
fn default_outlier_failures() -> u32 {
    3
}
fn default_outlier_ejection_ms() -> u64 {
    5_000
}

impl AggregatorConfig {
    /// Parses a config file's text (checks that need the manifest come in [`Self::validate`]).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let c: AggregatorConfig = serde_yaml::from_str(text)?;
        if c.schema_version != 1 {
            return Err(ConfigError::Version(c.schema_version));
        }
        Ok(c)
    }

    /// The manifest path, resolved against the folder of the config file at `config_path`.
    pub fn manifest_path(&self, config_path: &Path) -> PathBuf {
        if self.manifest.is_absolute() {
            self.manifest.clone()
        } else {
            config_path
                .parent()
                .unwrap_or(Path::new("."))
                .join(&self.manifest)
        }
    }

    /// Checks the config against the family manifest it points to.
    pub fn validate(&self, m: &Manifest) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        validate_k(self.top_k as i64, m.classes())
            .map_err(|e| ConfigError::Invalid(format!("top_k: {e}")))?;
        if self.variants.is_empty() {
            return bad("variants must list at least one variant".into());
        }
        let mut seen = BTreeSet::new();
        for v in &self.variants {
            if m.variant_index(&v.name).is_none() {
                return bad(format!(
                    "variant {:?} is not in family {:?}",
                    v.name, m.family
                ));
            }
            if !seen.insert(v.name.as_str()) {
                return bad(format!("variant {:?} is listed twice", v.name));
            }
            if !v.url.starts_with("http://") || v.url.len() <= "http://".len() {
                return bad(format!(
                    "variant {:?}: url {:?} must start with http://",
                    v.name, v.url
                ));
            }
        }
        if self.min_variants == 0 || self.min_variants > self.variants.len() {
            return bad(format!(
                "min_variants must be between 1 and the number of variants ({}), got {}",
                self.variants.len(),
                self.min_variants
            ));
        }
        if self.deadline_ms == 0
            || self.probe_interval_ms == 0
            || self.probe_timeout_ms == 0
            || self.outlier_failures == 0
            || self.outlier_ejection_ms == 0
        {
            return bad(
                "deadline_ms, probe_interval_ms, probe_timeout_ms, outlier_failures and outlier_ejection_ms must be positive"
                    .into(),
            );
        }
        for (name, w) in &self.weights {
            if m.variant_index(name).is_none() {
                return bad(format!(
                    "weights: {name:?} is not a variant of family {:?}",
                    m.family
                ));
            }
            if !(w.is_finite() && *w > 0.0) {
                return bad(format!(
                    "weights: {name:?} must be a positive number, got {w}"
                ));
            }
        }
        Ok(())
    }

    /// The served model name: `model_name`, or the family name.
    pub fn model_name<'a>(&'a self, m: &'a Manifest) -> &'a str {
        self.model_name.as_deref().unwrap_or(&m.family)
    }

    /// The combiner this config asks for: the config's `weights` where given, else the manifest's vote weights
    /// (so the served vote is the one the manifest's accuracy tables describe).
    pub fn combiner(&self, m: &Manifest) -> Combiner {
        let weights = m
            .variants
            .iter()
            .map(|v| self.weights.get(&v.name).copied().unwrap_or(v.vote_weight))
            .collect();
        Combiner::new(self.combine, m.classes(), weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample_yaml;

    const OK: &str = "schema_version: 1\nmanifest: ensemble.yaml\nvariants:\n  - name: v0\n    url: http://127.0.0.1:9101\n  \
                      - name: v2\n    url: http://vp-v2.default.svc:8080\n";

    fn manifest() -> Manifest {
        Manifest::from_yaml(&sample_yaml()).expect("manifest")
    }

    #[test]
    fn defaults_and_paths() {
        let c = AggregatorConfig::from_yaml(OK).expect("ok");
        c.validate(&manifest()).expect("valid");
        assert_eq!((c.top_k, c.deadline_ms, c.min_variants), (3, 200, 1));
        assert_eq!((c.outlier_failures, c.outlier_ejection_ms), (3, 5_000));
        assert_eq!(c.combine, CombineRule::SoftVote);
        assert_eq!(
            c.manifest_path(Path::new("/etc/vp/aggregator.yaml")),
            PathBuf::from("/etc/vp/ensemble.yaml")
        );
        assert_eq!(c.model_name(&manifest()), "fmnist");
        let back = AggregatorConfig::from_yaml(&serde_yaml::to_string(&c).expect("yaml"))
            .expect("round trip");
        assert_eq!(back, c);
    }

    #[test]
    fn weights_reach_the_combiner() {
        let y = format!("{OK}combine: majority\nweights: {{v2: 2.5}}\n");
        let c = AggregatorConfig::from_yaml(&y).expect("ok");
        c.validate(&manifest()).expect("valid");
        assert_eq!(c.combine, CombineRule::Majority);
        assert!(format!("{:?}", c.combiner(&manifest())).contains("[1.0, 1.0, 2.5]"));
    }

    #[test]
    fn manifest_vote_weights_are_the_default_and_config_weights_override_them() {
        let text = sample_yaml().replacen(
            "accuracy: 0.81\n",
            "accuracy: 0.81\n    vote_weight: 0.25\n",
            1,
        );
        let m = Manifest::from_yaml(&text).expect("manifest");
        assert_eq!(m.vote_weights(), vec![1.0, 0.25, 1.0]);
        let plain = AggregatorConfig::from_yaml(OK).expect("ok");
        assert!(format!("{:?}", plain.combiner(&m)).contains("[1.0, 0.25, 1.0]"));
        let y = format!("{OK}weights: {{v1: 2.0}}\n");
        let over = AggregatorConfig::from_yaml(&y).expect("ok");
        assert!(format!("{:?}", over.combiner(&m)).contains("[1.0, 2.0, 1.0]"));
    }

    #[test]
    fn rejects_bad_configs() {
        let m = manifest();
        let cases = [
            (
                OK.replace("schema_version: 1", "schema_version: 3"),
                "schema_version 3",
            ),
            (format!("{OK}deadline: 5\n"), "unknown field `deadline`"),
            (format!("{OK}top_k: 6\n"), "between 1 and 5"),
            (format!("{OK}top_k: 0\n"), "between 1 and 5"),
            (format!("{OK}min_variants: 3\n"), "min_variants"),
            (format!("{OK}min_variants: 0\n"), "min_variants"),
            (format!("{OK}deadline_ms: 0\n"), "positive"),
            (format!("{OK}outlier_failures: 0\n"), "positive"),
            (
                format!("{OK}combine: average\n"),
                "unknown variant `average`",
            ),
            (format!("{OK}weights: {{v1: -1}}\n"), "positive number"),
            (format!("{OK}weights: {{zz: 1}}\n"), "not a variant"),
            (OK.replace("name: v2", "name: v0"), "listed twice"),
            (OK.replace("name: v2", "name: v9"), "not in family"),
            (
                OK.replace("http://127.0.0.1:9101", "127.0.0.1:9101"),
                "must start with http://",
            ),
            (
                "schema_version: 1\nmanifest: e.yaml\nvariants: []\n".to_string(),
                "at least one",
            ),
        ];
        for (y, want) in cases {
            let e = match AggregatorConfig::from_yaml(&y) {
                Ok(c) => c.validate(&m).expect_err(want).to_string(),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }
}
