//! Operator-wide settings: default images and resources that an ensemble's spec may leave empty, and the ports
//! the data-plane binaries listen on. Filled from flags/environment by the binary.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// Defaults for what an ensemble does not say.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorConfig {
    /// Image of the variant server (`vp-variant`).
    pub variant_image: String,
    /// Image of the aggregator (`vp-aggregator`).
    pub aggregator_image: String,
    /// Image with `sh`, `curl` and `sha256sum` that downloads URL model sources in an init container.
    pub fetch_image: String,
    /// Variant container resources when the spec gives none.
    pub variant_resources: ResourceRequirements,
    /// Aggregator container resources when the spec gives none.
    pub aggregator_resources: ResourceRequirements,
}

/// Port every variant server and aggregator listens on inside its pod.
pub const HTTP_PORT: i32 = 8080;

/// Port of the OIP gRPC endpoint of every variant server and aggregator, inside its pod and on its Service.
pub const GRPC_PORT: i32 = 8081;

fn requests(cpu: &str, memory: &str) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), q(cpu)),
            ("memory".into(), q(memory)),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), q(memory))])),
        ..ResourceRequirements::default()
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            variant_image: "ghcr.io/variant-parallel/vp-variant:0.1.0".into(),
            aggregator_image: "ghcr.io/variant-parallel/vp-aggregator:0.1.0".into(),
            fetch_image: "curlimages/curl:8.11.1".into(),
            variant_resources: requests("250m", "256Mi"),
            aggregator_resources: requests("100m", "128Mi"),
        }
    }
}
