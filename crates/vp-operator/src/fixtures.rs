//! Test fixtures: a VariantEnsemble, its family manifest and a set of Nodes, read from the YAML files in
//! `fixtures/` exactly as the API server would return them.

use k8s_openapi::api::core::v1::Node;
use vp_api::{EnsembleManifest, VariantEnsemble};

/// The manifest text.
pub const MANIFEST: &str = include_str!("../fixtures/manifest.yaml");

/// The ensemble `edge/fm` with four variants, one per model source kind.
pub fn ensemble() -> VariantEnsemble {
    serde_yaml::from_str(include_str!("../fixtures/ensemble.yaml"))
        .expect("fixtures/ensemble.yaml parses")
}

/// The family manifest.
pub fn manifest() -> EnsembleManifest {
    EnsembleManifest::from_yaml(MANIFEST).expect("fixtures/manifest.yaml is valid")
}

/// Six nodes: edge-a (4 CPU), edge-b (2), edge-c (1, tainted edge=battery), edge-d (cordoned), edge-e (1.5),
/// core-0 (no edge label).
pub fn nodes() -> Vec<Node> {
    #[derive(serde::Deserialize)]
    struct List {
        items: Vec<Node>,
    }
    let list: List = serde_yaml::from_str(include_str!("../fixtures/nodes.yaml"))
        .expect("fixtures/nodes.yaml parses");
    list.items
}
