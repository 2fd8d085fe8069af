//! The desired state of a `VariantEnsemble`: which model family, which variants and where their model files
//! come from, how replies are combined, the aggregator, placement and failover.
//!
//! Field docs become the CRD's descriptions (`kubectl explain variantensemble.spec`), so they are written for
//! users. Single-field limits are OpenAPI keywords; rules that relate fields are CEL (`x-kubernetes-validations`)
//! so the API server rejects a bad object with a clear message before the operator ever sees it.

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest variant name: the manifest allows 40 characters, and `<ensemble>-<variant>` must fit a Service name.
pub const MAX_VARIANT_NAME: usize = 40;
/// Most variants in one ensemble (the manifest's subset table has 2^n - 1 rows).
pub const MAX_VARIANTS: usize = 16;
/// How long a variant server works on one request before it answers 408 (the operator passes it as the
/// variants' `--request-timeout-ms`). A deadline longer than this could never be waited for, so the CRD refuses
/// one.
pub const VARIANT_REQUEST_TIMEOUT_MS: i32 = 10_000;

/// A family of model variants served as one classifier: each variant runs on its own node and the aggregator
/// combines the top-k replies of whichever variants are alive, so losing a node lowers accuracy a little instead
/// of stopping service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vp.dev",
    version = "v1alpha1",
    kind = "VariantEnsemble",
    plural = "variantensembles",
    singular = "variantensemble",
    shortname = "ve",
    category = "vp",
    namespaced,
    status = "crate::status::VariantEnsembleStatus",
    derive = "PartialEq",
    doc = "A family of model variants served as one classifier: one variant per edge node, an aggregator that combines their top-k replies, and failover that moves variants off dead nodes within seconds.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every variant is serving and the aggregator is available"
    ),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.availableVariants",
        description = "Variants serving now"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredVariants",
        description = "Variants in the spec"
    ),
    printcolumn(
        name = "Accuracy",
        type_ = "number",
        json_path = ".status.expectedAccuracy",
        description = "Expected top-1 accuracy of the serving variants at the configured k"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.aggregatorEndpoint",
        description = "URL of the aggregator Service",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 52").message("metadata.name must be a DNS-1035 label of at most 52 characters (it prefixes the Services the operator creates)"),
    validation = Rule::new("self.spec.variants.all(v, size(self.metadata.name) + size(v.name) <= 62)").message("metadata.name and each variant name together must be at most 62 characters (they form the variant's Service name)")
)]
#[x_kube(validation = Rule::new("self.variants.all(v, self.variants.filter(w, w.name == v.name).size() == 1)").message("variant names must be unique"))]
#[x_kube(validation = Rule::new("self.topK <= self.model.classes / 2").message("topK must be at most model.classes / 2 (each variant replies with k classes out of the model's classes)").reason(Reason::FieldValueInvalid).field_path(".topK"))]
#[x_kube(validation = Rule::new("!has(self.aggregator) || !has(self.aggregator.minVariants) || self.aggregator.minVariants <= size(self.variants)").message("aggregator.minVariants must not exceed the number of variants"))]
#[serde(rename_all = "camelCase")]
pub struct VariantEnsembleSpec {
    /// The model family: where its manifest (ensemble.yaml) is and how many classes it has.
    pub model: ModelSpec,

    /// The variants to run, each on its own node where the cluster allows. Names must match variants in the
    /// manifest; a subset of the family may be deployed.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub variants: Vec<VariantSpec>,

    /// How many classes each variant returns (its top-k with their probabilities). 1 <= topK <= classes/2.
    #[schemars(range(min = 1))]
    pub top_k: i32,

    /// How the aggregator combines the variants' replies.
    #[serde(default)]
    pub combine: CombineRule,

    /// The aggregator: replicas, deadline, minimum number of replies and its Service.
    #[serde(default)]
    pub aggregator: AggregatorSpec,

    /// Where variants may run and how they are spread over nodes.
    #[serde(default)]
    pub placement: PlacementSpec,

    /// When a node counts as failed and its variants move.
    #[serde(default)]
    pub failover: FailoverSpec,

    /// Container images; empty fields take the operator's defaults (its --variant-image and
    /// --aggregator-image flags).
    #[serde(default)]
    pub images: ImagesSpec,

    /// Default compute resources of each variant container (a variant's own `resources` wins). Empty: the
    /// operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The model family of the ensemble.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Where the family's manifest (ensemble.yaml, schema version 1) is. The operator reads it for the variants'
    /// sizes (bigger variants go to stronger nodes) and the subset accuracy table (expected accuracy of the
    /// serving variants); the aggregator and the variants get it mounted.
    pub manifest: ManifestSource,

    /// Number of classes the models predict; must equal the manifest's output.classes (checked by the
    /// operator). Bounds topK.
    #[schemars(range(min = 2, max = 100000))]
    pub classes: i32,
}

/// A manifest kept in a ConfigMap of the ensemble's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSource {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub config_map: String,
    /// Key of the manifest in the ConfigMap's data.
    #[serde(default = "default_manifest_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_manifest_key() -> String {
    "ensemble.yaml".into()
}

/// One variant of the family and where its ONNX file comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantSpec {
    /// Name of the variant, as in the manifest (DNS label, at most 40 characters).
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Where the variant's ONNX file comes from. Exactly one source must be set. The variant verifies the
    /// file's sha256 against the manifest before it serves.
    pub source: VariantSource,

    /// Compute resources of this variant's container; overrides spec.resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Where one model file comes from: exactly one of the fields.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.configMap), has(self.url), has(self.hostPath), has(self.persistentVolumeClaim)].filter(x, x).size() == 1").message("exactly one of configMap, url, hostPath, persistentVolumeClaim must be set"))]
#[serde(rename_all = "camelCase")]
pub struct VariantSource {
    /// The file is a binaryData key of a ConfigMap (small models: a ConfigMap holds at most 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapModelSource>,
    /// The variant downloads the file over HTTP(S) at start-up and checks its sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlModelSource>,
    /// Absolute path of the file on the node (it must exist on every node the variant may run on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 4096), regex(pattern = r"^/"))]
    pub host_path: Option<String>,
    /// The file lives on a PersistentVolumeClaim (ReadOnlyMany where variants run on several nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcModelSource>,
}

/// A model file stored in a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapModelSource {
    /// Name of the ConfigMap in the ensemble's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the ONNX bytes (binaryData).
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A model file downloaded over HTTP(S).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlModelSource {
    /// http:// or https:// URL of the ONNX file.
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,
    /// Expected SHA-256 of the file, 64 lowercase hex digits; a mismatch stops the variant with an error.
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: String,
}

/// A model file on a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcModelSource {
    /// Name of the claim in the ensemble's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Path of the file inside the volume (relative, no "..").
    #[schemars(length(min = 1, max = 4096), regex(pattern = r"^[^/]"))]
    pub path: String,
}

/// The one source a [`VariantSource`] names, as a closed set for code.
#[derive(Clone, Debug, PartialEq)]
pub enum VariantSourceKind<'a> {
    /// See [`VariantSource::config_map`].
    ConfigMap(&'a ConfigMapModelSource),
    /// See [`VariantSource::url`].
    Url(&'a UrlModelSource),
    /// See [`VariantSource::host_path`].
    HostPath(&'a str),
    /// See [`VariantSource::persistent_volume_claim`].
    Pvc(&'a PvcModelSource),
}

impl VariantSource {
    /// The single source set, or `None` when zero or several are (the API server rejects those; this guards
    /// objects that skipped validation).
    pub fn kind(&self) -> Option<VariantSourceKind<'_>> {
        let all = [
            self.config_map.as_ref().map(VariantSourceKind::ConfigMap),
            self.url.as_ref().map(VariantSourceKind::Url),
            self.host_path.as_deref().map(VariantSourceKind::HostPath),
            self.persistent_volume_claim
                .as_ref()
                .map(VariantSourceKind::Pvc),
        ];
        let mut set = all.into_iter().flatten();
        match (set.next(), set.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }
}

/// How the aggregator combines top-k replies (see docs/models.md for the exact rule).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum CombineRule {
    /// Sum of the replied probabilities per class; the highest sum wins.
    #[default]
    SoftVote,
    /// Soft vote with each variant weighted by its own test accuracy from the manifest.
    WeightedSoftVote,
    /// Each variant votes for its top class; ties go to the higher summed probability.
    MajorityVote,
}

/// The aggregator that fans requests out to the variants and combines their replies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.deadlineMs <= 10000").message("aggregator.deadlineMs must be at most 10000: the variant servers end a request after 10 s (their request timeout), so a longer deadline could never be waited for").reason(Reason::FieldValueInvalid).field_path(".deadlineMs"))]
#[x_kube(validation = Rule::new("!has(self.requestTimeoutMs) || self.requestTimeoutMs > self.deadlineMs").message("aggregator.requestTimeoutMs must be larger than aggregator.deadlineMs: a request must be allowed to wait for the deadline and then answer").reason(Reason::FieldValueInvalid).field_path(".requestTimeoutMs"))]
#[serde(rename_all = "camelCase")]
pub struct AggregatorSpec {
    /// Number of aggregator pods (stateless; any can answer).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// How long the aggregator waits for variant replies before answering with those it has, in milliseconds;
    /// at most 10000 (the variant servers' request timeout).
    #[serde(default = "default_deadline_ms")]
    #[schemars(range(min = 1))]
    pub deadline_ms: i32,
    /// How long the aggregator works on one request in all (reading the body, waiting for the deadline,
    /// answering) before it answers 408, in milliseconds; must be larger than deadlineMs. Empty: deadlineMs plus
    /// 1000, and at least 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 600000))]
    pub request_timeout_ms: Option<i32>,
    /// Fewest replies needed to answer; with fewer the aggregator answers 503.
    #[serde(default = "default_min_variants")]
    #[schemars(range(min = 1, max = 16))]
    pub min_variants: i32,
    /// The aggregator's Service.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Compute resources of the aggregator container. Empty: the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for AggregatorSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            deadline_ms: default_deadline_ms(),
            request_timeout_ms: None,
            min_variants: default_min_variants(),
            service: ServiceSpec::default(),
            resources: None,
        }
    }
}

fn default_replicas() -> i32 {
    1
}
fn default_deadline_ms() -> i32 {
    200
}
fn default_min_variants() -> i32 {
    1
}

/// The Service in front of the aggregator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Port the Service listens on (HTTP, Open Inference Protocol v2).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            port: default_port(),
        }
    }
}

fn default_port() -> i32 {
    8080
}

/// Kubernetes Service types the aggregator may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Through the cluster's load balancer (k3s: ServiceLB).
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Where variants may run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// OnePerNode (default) puts each variant on a different node while enough nodes are eligible and only
    /// then shares nodes; Packed fills the strongest nodes first (fewest nodes in use).
    #[serde(default)]
    pub strategy: PlacementStrategy,
    /// Nodes must carry all these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Node affinity (required terms are honoured when choosing nodes; preferred terms only by the pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations of the variant pods; nodes with NoSchedule/NoExecute taints not tolerated are skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// How variants are spread over eligible nodes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PlacementStrategy {
    /// One variant per node while nodes last (best availability: a node failure costs one variant).
    #[default]
    OnePerNode,
    /// Fill the nodes with the most allocatable CPU first (fewest nodes).
    Packed,
}

/// When a node counts as failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// Seconds a node's Lease may go unrenewed before its variants move to healthy nodes. The kubelet renews
    /// every 10 s, so the default 20 s is two missed renewals; the minimum, 12 s, tolerates only 2 s of
    /// lateness, and anything at or below the renewal interval would move variants off healthy nodes.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 12, max = 3600))]
    pub node_grace_seconds: i32,
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self {
            node_grace_seconds: default_grace(),
        }
    }
}

/// The default [`FailoverSpec::node_grace_seconds`]: two missed kubelet lease renewals.
pub const DEFAULT_NODE_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

fn default_grace() -> i32 {
    i32::try_from(DEFAULT_NODE_GRACE.as_secs()).unwrap_or(i32::MAX)
}

/// Container images of the ensemble.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagesSpec {
    /// Image of the variant server. Empty: the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub variant: Option<String>,
    /// Image of the aggregator. Empty: the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub aggregator: Option<String>,
    /// Pull policy of both images (Always, IfNotPresent, Never). Empty: Kubernetes' default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(Always|IfNotPresent|Never)$"))]
    pub pull_policy: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_names_columns_and_rules() {
        let crd = VariantEnsemble::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("variantensembles.vp.dev")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["ve".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        let cols: Vec<&str> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            [
                "Ready",
                "Available",
                "Desired",
                "Accuracy",
                "Endpoint",
                "Age"
            ]
        );
        let text = serde_json::to_string(&crd).expect("serialisable");
        for rule in [
            "variant names must be unique",
            "topK must be at most",
            "exactly one of configMap",
            "DNS-1035",
            "aggregator.requestTimeoutMs must be larger than aggregator.deadlineMs",
            &format!("self.deadlineMs <= {VARIANT_REQUEST_TIMEOUT_MS}"),
            &format!("aggregator.deadlineMs must be at most {VARIANT_REQUEST_TIMEOUT_MS}"),
        ] {
            assert!(text.contains(rule), "CRD lacks rule {rule:?}");
        }
    }

    #[test]
    fn every_schema_property_is_described() {
        // kubectl explain must read well: walk the spec schema and find properties without a description.
        fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
                for (k, child) in props {
                    let p = format!("{path}.{k}");
                    if child.get("description").is_none() {
                        missing.push(p.clone());
                    }
                    walk(&p, child, missing);
                }
            }
            if let Some(items) = v.get("items") {
                walk(path, items, missing);
            }
        }
        let crd = serde_json::to_value(crate::crds().remove(0)).expect("serialisable");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        let mut missing = Vec::new();
        walk("spec", &schema["spec"], &mut missing);
        walk("status", &schema["status"], &mut missing);
        assert!(missing.is_empty(), "undocumented fields: {missing:?}");
        let desc = schema["spec"]["properties"]["failover"]["properties"]["nodeGraceSeconds"]["description"]
            .as_str()
            .expect("description");
        assert!(
            desc.starts_with("Seconds a node's Lease") && !desc.contains('\n'),
            "hard wraps joined: {desc:?}"
        );
    }

    #[test]
    fn source_kind_requires_exactly_one() {
        let none = VariantSource::default();
        assert_eq!(none.kind(), None);
        let one = VariantSource {
            host_path: Some("/m/v0.onnx".into()),
            ..VariantSource::default()
        };
        assert_eq!(one.kind(), Some(VariantSourceKind::HostPath("/m/v0.onnx")));
        let two = VariantSource {
            url: Some(UrlModelSource {
                url: "https://x/v0.onnx".into(),
                sha256: "0".repeat(64),
            }),
            ..one
        };
        assert_eq!(two.kind(), None);
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec: VariantEnsembleSpec = serde_json::from_value(serde_json::json!({
            "model": {"manifest": {"configMap": "fmnist"}, "classes": 10},
            "variants": [{"name": "v0", "source": {"hostPath": "/m/v0.onnx"}}],
            "topK": 3
        }))
        .expect("minimal spec parses");
        assert_eq!(spec.model.manifest.key, "ensemble.yaml");
        assert_eq!(spec.aggregator, AggregatorSpec::default());
        assert_eq!(spec.failover.node_grace_seconds, 20);
        assert_eq!(spec.placement.strategy, PlacementStrategy::OnePerNode);
        assert_eq!(spec.combine, CombineRule::SoftVote);
    }
}
