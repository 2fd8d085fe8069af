//! The parts of a family's manifest (`ensemble.yaml`, schema version 1, see docs/models.md) that the control
//! plane needs: variant sizes for placement and the subset accuracy table for the expected accuracy of whatever
//! variants are serving. Unknown fields are ignored so the toolchain may add more.
//!
//! The data plane reads the same file with its own, fuller types; the two must agree on this schema.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use thiserror::Error;

/// The only schema version this reader understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a manifest was rejected.
#[derive(Debug, Error, PartialEq)]
pub enum ManifestError {
    /// Not YAML of the expected shape.
    #[error("manifest is not valid: {0}")]
    Parse(String),
    /// A schema version this reader does not know.
    #[error(
        "manifest schema_version {found} is not supported (this operator reads version {SCHEMA_VERSION})"
    )]
    Version {
        /// The version in the file.
        found: u32,
    },
    /// A rule between fields is broken.
    #[error("manifest is inconsistent: {0}")]
    Inconsistent(String),
}

/// A family manifest, reduced to what the control plane uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleManifest {
    /// Schema version (must be 1).
    pub schema_version: u32,
    /// Family name.
    pub family: String,
    /// The model output.
    pub output: ManifestOutput,
    /// The variants in family order.
    pub variants: Vec<ManifestVariant>,
    /// One row per non-empty subset of variants.
    #[serde(default)]
    pub subsets: Vec<SubsetRow>,
}

/// The output tensor of every model of the family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestOutput {
    /// Number of classes.
    pub classes: u32,
}

/// One variant's description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestVariant {
    /// Unique, DNS-label safe name.
    pub name: String,
    /// ONNX file, relative to the manifest.
    pub file: String,
    /// SHA-256 of the file (64 hex digits).
    pub sha256: String,
    /// File size in bytes.
    #[serde(default)]
    pub bytes: u64,
    /// Trainable parameters.
    pub params: u64,
    /// Multiply-accumulates per input: the variant's compute weight in placement.
    pub macs: u64,
    /// Top-1 accuracy on the test split.
    pub accuracy: f64,
}

/// Accuracy of one subset of variants answering together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetRow {
    /// Variant names, in family order.
    pub variants: Vec<String>,
    /// Soft vote of full probability vectors.
    pub accuracy: f64,
    /// Index k-1: soft vote of top-k replies, k = 1..classes/2.
    pub topk_accuracy: Vec<f64>,
}

impl EnsembleManifest {
    /// Parses and checks a manifest: known version, unique variant names, subsets naming known variants,
    /// accuracies in [0, 1].
    pub fn from_yaml(text: &str) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let version: Version =
            serde_yaml::from_str(text).map_err(|e| ManifestError::Parse(e.to_string()))?;
        if version.schema_version != SCHEMA_VERSION {
            return Err(ManifestError::Version {
                found: version.schema_version,
            });
        }
        let manifest: Self =
            serde_yaml::from_str(text).map_err(|e| ManifestError::Parse(e.to_string()))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), ManifestError> {
        let bad = |m: String| Err(ManifestError::Inconsistent(m));
        if self.variants.is_empty() {
            return bad("no variants".into());
        }
        if self.output.classes < 2 {
            return bad(format!(
                "output.classes is {}, need at least 2",
                self.output.classes
            ));
        }
        let mut names = HashSet::new();
        for v in &self.variants {
            if !names.insert(v.name.as_str()) {
                return bad(format!("variant name {:?} appears twice", v.name));
            }
            if !(0.0..=1.0).contains(&v.accuracy) {
                return bad(format!(
                    "variant {:?} has accuracy {} outside [0, 1]",
                    v.name, v.accuracy
                ));
            }
        }
        let mut seen = HashSet::new();
        for row in &self.subsets {
            if row.variants.is_empty() {
                return bad("a subsets row names no variants".into());
            }
            if let Some(unknown) = row.variants.iter().find(|n| !names.contains(n.as_str())) {
                return bad(format!("subsets row names unknown variant {unknown:?}"));
            }
            let key: BTreeSet<&str> = row.variants.iter().map(String::as_str).collect();
            if key.len() != row.variants.len() {
                return bad(format!("subsets row {:?} repeats a variant", row.variants));
            }
            if !seen.insert(key) {
                return bad(format!("subsets row {:?} appears twice", row.variants));
            }
            let all = std::iter::once(&row.accuracy).chain(&row.topk_accuracy);
            if let Some(a) = all.into_iter().find(|a| !(0.0..=1.0).contains(*a)) {
                return bad(format!(
                    "subsets row {:?} has accuracy {a} outside [0, 1]",
                    row.variants
                ));
            }
        }
        Ok(())
    }

    /// The variant of this name.
    pub fn variant(&self, name: &str) -> Option<&ManifestVariant> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// Expected top-1 accuracy when exactly `serving` answer with top-`k` replies: the subsets row for that set
    /// at `topk_accuracy[k-1]`. `None` when nobody serves, the row is missing, or k is outside the row.
    pub fn expected_accuracy<'a>(
        &self,
        serving: impl IntoIterator<Item = &'a str>,
        k: u32,
    ) -> Option<f64> {
        let want: BTreeSet<&str> = serving.into_iter().collect();
        if want.is_empty() || k == 0 {
            return None;
        }
        let row = self.subsets.iter().find(|r| {
            r.variants.len() == want.len() && r.variants.iter().all(|n| want.contains(n.as_str()))
        })?;
        row.topk_accuracy.get(usize::try_from(k - 1).ok()?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
schema_version: 1
family: tiny
dataset: {name: fashion-mnist, classes: [a, b, c, d], test_samples: 10}
output: {name: probs, dtype: float32, classes: 4}
variants:
  - {name: v0, file: v0.onnx, sha256: "00", bytes: 10, params: 100, macs: 1000, accuracy: 0.8, width: 0.5}
  - {name: v1, file: v1.onnx, sha256: "11", bytes: 20, params: 200, macs: 3000, accuracy: 0.85}
subsets:
  - {variants: [v0], accuracy: 0.8, topk_accuracy: [0.8, 0.8]}
  - {variants: [v1], accuracy: 0.85, topk_accuracy: [0.85, 0.85]}
  - {variants: [v0, v1], accuracy: 0.9, topk_accuracy: [0.88, 0.9]}
training: {seed: 0}
"#;

    #[test]
    fn reads_what_the_control_plane_needs_and_ignores_the_rest() {
        let m = EnsembleManifest::from_yaml(SMALL).expect("valid");
        assert_eq!(m.output.classes, 4);
        assert_eq!(m.variant("v1").map(|v| v.macs), Some(3000));
        assert_eq!(m.expected_accuracy(["v1", "v0"], 1), Some(0.88));
        assert_eq!(m.expected_accuracy(["v0"], 2), Some(0.8));
        assert_eq!(m.expected_accuracy([], 1), None);
        assert_eq!(
            m.expected_accuracy(["v0", "v1"], 3),
            None,
            "k beyond the table"
        );
        assert_eq!(m.expected_accuracy(["v9"], 1), None);
    }

    #[test]
    fn rejects_unknown_version_with_a_clear_error() {
        let e =
            EnsembleManifest::from_yaml(&SMALL.replace("schema_version: 1", "schema_version: 2"));
        let e = e.expect_err("version 2 must be rejected");
        assert_eq!(e, ManifestError::Version { found: 2 });
        assert!(e.to_string().contains("version 2 is not supported"));
    }

    #[test]
    fn rejects_inconsistent_manifests() {
        let cases = [
            (SMALL.replace("name: v1,", "name: v0,"), "appears twice"),
            (
                SMALL.replace("variants: [v1]", "variants: [v7]"),
                "unknown variant",
            ),
            (
                SMALL.replace("accuracy: 0.85}", "accuracy: 1.5}"),
                "outside [0, 1]",
            ),
            (
                SMALL.replace("variants: [v1]", "variants: [v0]"),
                "appears twice",
            ),
            (SMALL.replace("classes: 4}", "classes: 1}"), "at least 2"),
        ];
        for (text, want) in cases {
            let err = EnsembleManifest::from_yaml(&text).expect_err(want);
            assert!(
                err.to_string().contains(want),
                "{err} should mention {want}"
            );
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for text in [
            "",
            "[1, 2",
            "schema_version: one",
            "schema_version: 1\nvariants: 3",
            "\u{0}\u{1}",
        ] {
            assert!(EnsembleManifest::from_yaml(text).is_err(), "{text:?}");
        }
    }
}
