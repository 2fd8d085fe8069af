//! Command-line flags of the aggregator (each also readable from a `VP_*` environment variable).

use clap::Parser;
use std::path::PathBuf;
use vp_server::{LimitFlags, LogFormat};

/// Combine the top-k replies of a family's variant servers into one answer.
#[derive(Debug, Clone, Parser)]
#[command(name = "vp-aggregator", version)]
pub struct Args {
    /// The aggregator config file (format in docs/dataplane.md); re-read when it changes.
    #[arg(long, env = "VP_CONFIG")]
    pub config: PathBuf,
    /// Digest of the config this replica must serve before it reports ready (`config_digest` in `/v1/status`:
    /// sha256 over the config file's length, the config file and the manifest). The operator sets it, so a
    /// replica whose mounted ConfigMap has not caught up yet stays unready.
    #[arg(long, env = "VP_EXPECT_CONFIG_DIGEST")]
    pub expect_config_digest: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "VP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Address of the OIP gRPC endpoint (`inference.GRPCInferenceService`); none when not given.
    #[arg(long, env = "VP_GRPC_LISTEN")]
    pub grpc_listen: Option<String>,
    /// Largest batch (N) accepted in one OIP infer request.
    #[arg(long, env = "VP_MAX_BATCH", default_value_t = 64)]
    pub max_batch: usize,
    /// Largest image file accepted by /v1/classify, in bytes.
    #[arg(long, env = "VP_MAX_IMAGE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_image_bytes: usize,
    /// Requests taking longer than this get 408 (raised to the config's deadline_ms + 1 s when that is longer).
    #[arg(long, env = "VP_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Memory this server may use in all, in MiB (the operator passes 75 % of the container's memory
    /// limit); request bodies and image decodes are admitted only while they fit.
    #[arg(long, env = "VP_MEMORY_BUDGET_MIB", default_value_t = 128)]
    pub memory_budget_mib: u64,
    #[command(flatten)]
    pub limits: LimitFlags,
    /// Log format.
    #[arg(long, env = "VP_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
