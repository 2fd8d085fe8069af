//! The `VariantEnsemble` custom resource (group `vp.dev`, version `v1alpha1`), the labels the operator puts on
//! what it creates, and the parts of the ensemble manifest (`ensemble.yaml`) the control plane reads.
//!
//! Everything here is plain data: no client, no I/O. The CRD YAML in `crds/` is generated from these types by
//! the `crdgen` binary and checked in CI.

pub mod labels;
pub mod manifest;
pub mod spec;
pub mod status;

pub use manifest::{EnsembleManifest, ManifestError};
pub use spec::{
    AggregatorSpec, CombineRule, ConfigMapModelSource, FailoverSpec, ImagesSpec, ManifestSource,
    ModelSpec, PlacementSpec, PlacementStrategy, PvcModelSource, ServiceSpec, ServiceType,
    UrlModelSource, VariantEnsemble, VariantEnsembleSpec, VariantSource, VariantSourceKind,
    VariantSpec,
};
pub use status::{ConditionType, VariantEnsembleStatus, VariantStatus};

/// API group of every resource of this project.
pub const GROUP: &str = "vp.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
