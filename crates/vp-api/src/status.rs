//! The observed state of a `VariantEnsemble`, written by the operator on the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator last saw of the ensemble.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VariantEnsembleStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready (every variant serving and the aggregator available), Degraded (some variant is not serving or
    /// cannot be placed), Progressing (objects are being created, moved or rolled out).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// One entry per variant of the spec, in spec order.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub variants: Vec<VariantStatus>,

    /// Variants in the spec.
    #[serde(default)]
    pub desired_variants: i32,

    /// Variants whose pod is Ready on a healthy node.
    #[serde(default)]
    pub available_variants: i32,

    /// Expected top-1 accuracy of the serving variants at the configured k, from the manifest's subset table
    /// (absent while no variant serves or the manifest cannot be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_accuracy: Option<f64>,

    /// In-cluster URL of the aggregator Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator_endpoint: Option<String>,
}

/// Where one variant runs and how it is doing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantStatus {
    /// Variant name.
    pub name: String,
    /// Node the variant is placed on (absent when it cannot be placed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Name of the variant's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Whether the pod is Ready and its node healthy.
    #[serde(default)]
    pub ready: bool,
    /// When `ready` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// How many times the operator moved or replaced this variant's pod.
    #[serde(default)]
    pub reschedules: i32,
    /// Why the variant is not serving, or why it last moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The condition types of a `VariantEnsemble`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// The ensemble serves what its spec says: the aggregator serves the current config, every variant serves,
    /// and every apply of this generation succeeded (docs/operator.md, "Ready").
    Ready,
    /// The ensemble answers with fewer variants than desired, or cannot answer at all.
    Degraded,
    /// The operator is creating, moving or rolling out objects.
    Progressing,
}

impl ConditionType {
    /// The `type` string of the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Degraded => "Degraded",
            Self::Progressing => "Progressing",
        }
    }
}

impl VariantEnsembleStatus {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_.as_str())
    }
}
