//! The family manifest (`ensemble.yaml`, schema version 1, see docs/models.md) as the control plane sees it. It
//! is the data plane's own reader (`vp_core::manifest`), not a copy: the operator accepts exactly the manifests
//! the aggregator and variant servers accept, and reports the same error when they would refuse one.

pub use vp_core::manifest::{
    Manifest as EnsembleManifest, ManifestError, ModelEntry as ManifestVariant, SCHEMA_VERSION,
    SubsetRow,
};
