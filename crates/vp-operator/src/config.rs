//! Operator-wide settings: default images and resources that an ensemble's spec may leave empty, the ports the
//! data-plane binaries listen on, and what the cluster admin allows (hostPath folders, download time, network
//! policies). Filled from flags/environment by the binary.

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
    /// Folders under which hostPath model sources may lie (an ensemble naming another path is InvalidSpec).
    /// Empty: hostPath sources are refused.
    pub host_path_prefixes: Vec<String>,
    /// Longest a URL model download may take, in seconds (the init container gives up after it).
    pub fetch_timeout_seconds: u32,
    /// Whether each ensemble gets NetworkPolicies (variants reachable only from their aggregator and from
    /// monitoring).
    pub network_policies: bool,
    /// Namespace whose pods may scrape the variants' and aggregators' metrics (Prometheus). Empty: none.
    pub monitoring_namespace: Option<String>,
}

/// Port every variant server and aggregator listens on inside its pod.
pub const HTTP_PORT: i32 = 8080;
/// The default of [`OperatorConfig::host_path_prefixes`].
pub const DEFAULT_HOST_PATH_PREFIX: &str = "/var/lib/vp";
/// Share of a container's memory limit given to its server as `--memory-budget-mib`, in percent. The rest is
/// headroom for what the server's own accounting does not see (allocator slack, thread stacks, page cache of
/// the mounted model).
pub const MEMORY_BUDGET_PERCENT: u64 = 75;

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
            host_path_prefixes: vec![DEFAULT_HOST_PATH_PREFIX.into()],
            fetch_timeout_seconds: 300,
            network_policies: true,
            monitoring_namespace: Some("monitoring".into()),
        }
    }
}
