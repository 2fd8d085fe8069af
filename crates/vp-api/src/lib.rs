//! The `VariantEnsemble` custom resource (group `vp.dev`, version `v1alpha1`), the labels the operator puts on
//! what it creates, and (re-exported from vp-core) the data plane's contract: the ensemble manifest
//! (`ensemble.yaml`) reader, the aggregator config file, the k rule and the combine rule.
//!
//! Everything here is plain data: no client, no I/O. The CRD YAML in `crds/` is generated from these types by
//! the `crdgen` binary and checked in CI.

pub mod dataplane;
pub mod labels;
pub mod manifest;
pub mod spec;
pub mod status;

pub use dataplane::{
    AggregatorConfig, DataPlaneCombineRule, VariantEndpoint, config_digest, validate_k,
};
pub use manifest::{EnsembleManifest, ManifestError};
pub use spec::{
    AggregatorSpec, CombineRule, ConfigMapModelSource, DEFAULT_NODE_GRACE, FailoverSpec,
    ImagesSpec, ManifestSource, ModelSpec, PlacementSpec, PlacementStrategy, PvcModelSource,
    ServiceSpec, ServiceType, UrlModelSource, VARIANT_REQUEST_TIMEOUT_MS, VariantEnsemble,
    VariantEnsembleSpec, VariantSource, VariantSourceKind, VariantSpec,
};
pub use status::{ConditionType, VariantEnsembleStatus, VariantStatus};

/// The CustomResourceDefinitions of this project, as installed (`crdgen` writes these). Descriptions come from
/// doc comments; their hard line wraps are joined so that `kubectl explain` reflows the text (blank lines stay
/// paragraph breaks).
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    let mut crd = VariantEnsemble::crd();
    for v in &mut crd.spec.versions {
        if let Some(schema) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            unwrap_descriptions(schema);
        }
    }
    vec![crd]
}

fn unwrap_descriptions(
    s: &mut k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
) {
    if let Some(d) = s.description.as_mut() {
        *d = d
            .split("\n\n")
            .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
    for child in s.properties.iter_mut().flat_map(|p| p.values_mut()) {
        unwrap_descriptions(child);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) =
        s.items.as_mut()
    {
        unwrap_descriptions(items);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(extra)) =
        s.additional_properties.as_mut()
    {
        unwrap_descriptions(extra);
    }
}

/// API group of every resource of this project.
pub const GROUP: &str = "vp.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
