//! The family manifest `ensemble.yaml` (schema version 1, see docs/models.md): parsing, validation, and the
//! lookups the data plane needs (variant order, class names, expected accuracy of a subset of variants).

use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use thiserror::Error;

/// The only manifest schema version this reader understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a manifest was rejected.
#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("manifest is not valid YAML for schema v1: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error(
        "manifest schema_version {0} is not supported (this build reads version {SCHEMA_VERSION})"
    )]
    Version(u32),
    #[error("manifest is inconsistent: {0}")]
    Invalid(String),
}

/// A parsed, validated `ensemble.yaml`.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub family: String,
    pub dataset: Dataset,
    pub input: InputDecl,
    pub output: OutputDecl,
    pub variants: Vec<ModelEntry>,
    pub baseline: ModelEntry,
    pub subsets: Vec<SubsetRow>,
    #[serde(default)]
    pub topk: Vec<TopkRow>,
    #[serde(skip)]
    subset_index: HashMap<u64, usize>,
}

/// The data set the family was trained and evaluated on.
#[derive(Debug, Clone, Deserialize)]
pub struct Dataset {
    pub name: String,
    pub classes: Vec<String>,
    pub test_samples: u64,
    /// Folder (relative to the manifest) with the test split as IDX files, for families trained on an image
    /// folder; absent for data sets installed elsewhere (Fashion-MNIST).
    #[serde(default)]
    pub test_split: Option<String>,
}

/// The models' single input tensor.
#[derive(Debug, Clone, Deserialize)]
pub struct InputDecl {
    pub name: String,
    pub dtype: String,
    pub layout: String,
    /// C, H, W of one sample.
    pub shape: Vec<usize>,
}

/// The models' single output tensor (softmax probabilities).
#[derive(Debug, Clone, Deserialize)]
pub struct OutputDecl {
    pub name: String,
    pub dtype: String,
    pub classes: usize,
}

/// One model file of the family (a variant or the baseline).
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub resolution: u32,
    pub width: f64,
    #[serde(default)]
    pub depth: Vec<u32>,
    pub head_channels: u32,
    pub params: u64,
    pub macs: u64,
    pub accuracy: f64,
    /// This variant's weight in the soft vote (fitted on the validation split by the toolchain); 1 when absent.
    /// The manifest's subset and top-k tables were computed with these weights.
    #[serde(default = "unit_weight")]
    pub vote_weight: f64,
}

fn unit_weight() -> f64 {
    1.0
}

/// Accuracy of one non-empty subset of variants.
#[derive(Debug, Clone, Deserialize)]
pub struct SubsetRow {
    pub variants: Vec<String>,
    pub accuracy: f64,
    /// Index k-1: soft vote of top-k replies, k = 1..classes/2.
    pub topk_accuracy: Vec<f64>,
}

/// Full-ensemble accuracy when every variant sends only its top-k.
#[derive(Debug, Clone, Deserialize)]
pub struct TopkRow {
    pub k: usize,
    pub accuracy: f64,
}

impl Manifest {
    /// Parses and validates a manifest from YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, ManifestError> {
        let mut m: Manifest = serde_yaml::from_str(text)?;
        if m.schema_version != SCHEMA_VERSION {
            return Err(ManifestError::Version(m.schema_version));
        }
        m.validate().map_err(ManifestError::Invalid)?;
        m.subset_index = m
            .subsets
            .iter()
            .enumerate()
            .map(|(i, row)| (m.mask_of(&row.variants).unwrap_or(0), i))
            .collect();
        Ok(m)
    }

    fn validate(&self) -> Result<(), String> {
        let classes = self.output.classes;
        if classes < 2 || self.dataset.classes.len() != classes {
            return Err(format!(
                "output.classes is {classes} but dataset.classes names {}",
                self.dataset.classes.len()
            ));
        }
        if self.input.dtype != "uint8" || self.input.layout != "NCHW" || self.input.shape.len() != 3
        {
            return Err("input must be uint8, layout NCHW, shape [C, H, W]".into());
        }
        if self.input.shape.contains(&0) {
            return Err("input shape has a zero dimension".into());
        }
        if self.output.dtype != "float32" {
            return Err("output dtype must be float32".into());
        }
        if self.variants.is_empty() || self.variants.len() > 16 {
            return Err(format!(
                "expected 1 to 16 variants, found {}",
                self.variants.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for v in self.variants.iter().chain(std::iter::once(&self.baseline)) {
            if !is_dns_label(&v.name) {
                return Err(format!(
                    "model name {:?} is not a DNS label ([a-z0-9-], <= 40 chars)",
                    v.name
                ));
            }
            if !seen.insert(v.name.as_str()) {
                return Err(format!("model name {:?} appears twice", v.name));
            }
            if v.sha256.len() != 64 || !v.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "model {:?}: sha256 must be 64 hex characters",
                    v.name
                ));
            }
            if !(v.vote_weight.is_finite() && v.vote_weight > 0.0) {
                return Err(format!(
                    "model {:?}: vote_weight must be a positive number, got {}",
                    v.name, v.vote_weight
                ));
            }
            if v.file.is_empty() || v.file.contains("..") {
                return Err(format!(
                    "model {:?}: file {:?} must be a plain relative path",
                    v.name, v.file
                ));
            }
        }
        if let Some(split) = &self.dataset.test_split
            && (split.is_empty() || split.starts_with('/') || split.contains(".."))
        {
            return Err(format!(
                "dataset.test_split {split:?} must be a plain relative folder"
            ));
        }
        let n = self.variants.len();
        let expected_rows = (1usize << n) - 1;
        let mut masks = BTreeSet::new();
        for row in &self.subsets {
            let mask = self.mask_of(&row.variants).ok_or_else(|| {
                format!(
                    "subset {:?} names an unknown variant or repeats one",
                    row.variants
                )
            })?;
            if mask == 0 || !masks.insert(mask) {
                return Err(format!(
                    "subset {:?} is empty or listed twice",
                    row.variants
                ));
            }
            if row.topk_accuracy.len() != classes / 2 {
                return Err(format!(
                    "subset {:?}: topk_accuracy has {} entries, expected classes/2 = {}",
                    row.variants,
                    row.topk_accuracy.len(),
                    classes / 2
                ));
            }
        }
        if masks.len() != expected_rows {
            return Err(format!(
                "subsets has {} rows, expected 2^{n} - 1 = {expected_rows}",
                masks.len()
            ));
        }
        Ok(())
    }

    /// The variants' vote weights in family order (the weights the manifest's tables were computed with).
    pub fn vote_weights(&self) -> Vec<f64> {
        self.variants.iter().map(|v| v.vote_weight).collect()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.output.classes
    }

    /// Position of a variant in family order.
    pub fn variant_index(&self, name: &str) -> Option<usize> {
        self.variants.iter().position(|v| v.name == name)
    }

    /// A model entry (variant or baseline) by name.
    pub fn model(&self, name: &str) -> Option<&ModelEntry> {
        self.variants
            .iter()
            .chain(std::iter::once(&self.baseline))
            .find(|m| m.name == name)
    }

    /// Bit mask of a set of variant names (bit i = family index i); None if a name is unknown or repeated.
    pub fn mask_of<S: AsRef<str>>(&self, names: &[S]) -> Option<u64> {
        let mut mask = 0u64;
        for n in names {
            let bit = 1u64 << self.variant_index(n.as_ref())?;
            if mask & bit != 0 {
                return None;
            }
            mask |= bit;
        }
        Some(mask)
    }

    /// The subset table row for exactly this set of variants (given as a family-index bit mask).
    pub fn subset(&self, mask: u64) -> Option<&SubsetRow> {
        self.subset_index.get(&mask).map(|&i| &self.subsets[i])
    }

    /// Expected accuracy of a soft vote over the top-k replies of exactly these variants.
    pub fn expected_accuracy(&self, mask: u64, k: usize) -> Option<f64> {
        let row = self.subset(mask)?;
        row.topk_accuracy.get(k.checked_sub(1)?).copied()
    }

    /// A variant (not the baseline) by name.
    pub fn variant(&self, name: &str) -> Option<&ModelEntry> {
        self.variants.iter().find(|m| m.name == name)
    }

    /// Expected accuracy when exactly the named variants answer with top-`k` replies; None when none answer,
    /// a name is unknown or repeated, or k is outside 1..=classes/2.
    pub fn subset_accuracy<'a>(
        &self,
        serving: impl IntoIterator<Item = &'a str>,
        k: usize,
    ) -> Option<f64> {
        let names: Vec<&str> = serving.into_iter().collect();
        let mask = self.mask_of(&names)?;
        if mask == 0 {
            return None;
        }
        self.expected_accuracy(mask, k)
    }

    /// Class label by index.
    pub fn label(&self, class: usize) -> &str {
        self.dataset
            .classes
            .get(class)
            .map(String::as_str)
            .unwrap_or("?")
    }
}

/// DNS label as used for Kubernetes object names: `[a-z0-9-]`, 1..=40 chars, no leading or trailing `-`.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small valid manifest with three variants for unit tests (not a shipped model).
    pub fn sample_yaml() -> String {
        let model = |name: &str, acc: f64| {
            format!(
                "  name: {name}\n  file: {name}.onnx\n  sha256: {}\n  bytes: 100\n  resolution: 28\n  width: 0.5\n  \
                 depth: [1, 2, 3, 4, 3, 3, 1]\n  head_channels: 320\n  params: 1000\n  macs: 10000\n  accuracy: {acc}\n",
                "ab".repeat(32)
            )
        };
        let mut s = String::from(
            "schema_version: 1\nfamily: fmnist\ndataset:\n  name: fashion-mnist\n  classes: [T-shirt/top, Trouser, \
             Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot]\n  test_samples: 10000\ninput:\n  \
             name: image\n  dtype: uint8\n  layout: NCHW\n  shape: [1, 28, 28]\noutput:\n  name: probs\n  \
             dtype: float32\n  classes: 10\nvariants:\n",
        );
        for (i, name) in ["v0", "v1", "v2"].iter().enumerate() {
            let m = model(name, 0.8 + i as f64 / 100.0);
            s += &format!("  - {}", m.replacen("  ", "", 1).replace("\n  ", "\n    "));
        }
        s += "baseline:\n";
        s += &model("baseline", 0.9);
        s += "subsets:\n";
        let names = ["v0", "v1", "v2"];
        for mask in 1u32..8 {
            let vs: Vec<&str> = (0..3)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| names[i])
                .collect();
            let base = 0.8 + mask as f64 / 100.0;
            s += &format!(
                "  - variants: [{}]\n    accuracy: {base}\n    topk_accuracy: [{}, {}, {}, {}, {}]\n",
                vs.join(", "),
                base - 0.005,
                base - 0.004,
                base - 0.003,
                base - 0.002,
                base - 0.001
            );
        }
        s += "topk:\n  - k: 1\n    accuracy: 0.85\ntraining:\n  seed: 0\n  config: {a: 1}\n";
        s
    }

    #[test]
    fn vote_weights_default_to_one_and_must_be_positive() {
        let m = Manifest::from_yaml(&sample_yaml()).expect("manifest");
        assert_eq!(m.vote_weights(), vec![1.0; 3]);
        for bad in ["0", "-0.5", ".nan", ".inf"] {
            let text = sample_yaml().replacen(
                "accuracy: 0.8\n",
                &format!("accuracy: 0.8\n    vote_weight: {bad}\n"),
                1,
            );
            let err = Manifest::from_yaml(&text).expect_err(bad).to_string();
            assert!(
                err.contains("vote_weight must be a positive number"),
                "{err}"
            );
        }
    }

    #[test]
    fn parses_a_valid_manifest_and_looks_up_subsets() {
        let m = Manifest::from_yaml(&sample_yaml()).expect("valid");
        assert_eq!(m.classes(), 10);
        assert_eq!(m.variant_index("v2"), Some(2));
        assert_eq!(m.label(9), "Ankle boot");
        let mask = m.mask_of(&["v2", "v0"]).expect("known");
        assert_eq!(mask, 0b101);
        assert_eq!(
            m.subset(mask).map(|r| r.variants.clone()),
            Some(vec!["v0".into(), "v2".into()])
        );
        let acc = m.expected_accuracy(mask, 3).expect("row");
        assert!((acc - (0.85 - 0.003)).abs() < 1e-9);
        assert_eq!(m.expected_accuracy(mask, 6), None);
        assert_eq!(m.expected_accuracy(0, 1), None);
        assert!(m.mask_of(&["v0", "v0"]).is_none());
        assert!(m.mask_of(&["nope"]).is_none());
    }

    #[test]
    fn subset_accuracy_by_names() {
        let m = Manifest::from_yaml(&sample_yaml()).expect("valid");
        let by_mask = m.expected_accuracy(0b101, 3);
        assert!(by_mask.is_some());
        assert_eq!(m.subset_accuracy(["v2", "v0"], 3), by_mask);
        assert_eq!(m.subset_accuracy([], 3), None, "nobody serves");
        assert_eq!(m.subset_accuracy(["v0", "nope"], 3), None);
        assert_eq!(m.subset_accuracy(["v0"], 0), None);
        assert_eq!(m.variant("v1").map(|v| v.file.as_str()), Some("v1.onnx"));
        assert!(
            m.variant("baseline").is_none(),
            "the baseline is not a variant"
        );
    }

    #[test]
    fn rejects_unknown_schema_version() {
        let y = sample_yaml().replace("schema_version: 1", "schema_version: 2");
        let e = Manifest::from_yaml(&y)
            .expect_err("should fail")
            .to_string();
        assert!(e.contains("schema_version 2"), "{e}");
    }

    #[test]
    fn rejects_missing_subset_rows() {
        let y = sample_yaml();
        let cut = y.find("  - variants: [v0, v1, v2]").expect("row");
        let end = y.find("topk:").expect("topk");
        let y = format!("{}{}", &y[..cut], &y[end..]);
        let e = Manifest::from_yaml(&y)
            .expect_err("should fail")
            .to_string();
        assert!(e.contains("expected 2^3 - 1"), "{e}");
    }

    #[test]
    fn rejects_bad_names_hashes_and_paths() {
        let y = sample_yaml().replacen("name: v1", "name: V_1", 1);
        assert!(
            Manifest::from_yaml(&y)
                .expect_err("should fail")
                .to_string()
                .contains("DNS label")
        );
        let y = sample_yaml().replacen(&"ab".repeat(32), "xyz", 1);
        assert!(
            Manifest::from_yaml(&y)
                .expect_err("should fail")
                .to_string()
                .contains("sha256")
        );
        let y = sample_yaml().replacen("file: v0.onnx", "file: ../v0.onnx", 1);
        assert!(
            Manifest::from_yaml(&y)
                .expect_err("should fail")
                .to_string()
                .contains("plain relative path")
        );
    }

    #[test]
    fn rejects_class_count_mismatch_and_garbage() {
        let y = sample_yaml().replace("classes: 10", "classes: 12");
        assert!(
            Manifest::from_yaml(&y)
                .expect_err("should fail")
                .to_string()
                .contains("output.classes")
        );
        assert!(Manifest::from_yaml("[1, 2").is_err());
        assert!(Manifest::from_yaml("family: x").is_err());
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("v0"));
        assert!(is_dns_label("wide-1"));
        assert!(!is_dns_label("-v"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label(&"a".repeat(41)));
    }
}
