//! Command-line flags of the variant server (each also readable from a `VP_*` environment variable).

use clap::Parser;
use std::path::PathBuf;
use vp_server::{LimitFlags, LogFormat};

/// Serve one variant of a family over Open Inference Protocol v2 (REST, and gRPC with --grpc-listen).
#[derive(Debug, Clone, Parser)]
#[command(name = "vp-variant", version)]
pub struct Args {
    /// The family's ensemble.yaml.
    #[arg(long, env = "VP_MANIFEST")]
    pub manifest: PathBuf,
    /// Which model of the family to serve (a variant name, or the baseline's name).
    #[arg(long, env = "VP_VARIANT")]
    pub variant: String,
    /// Address to listen on.
    #[arg(long, env = "VP_LISTEN", default_value = "127.0.0.1:9101")]
    pub listen: String,
    /// Address of the OIP gRPC endpoint (`inference.GRPCInferenceService`); none when not given.
    #[arg(long, env = "VP_GRPC_LISTEN")]
    pub grpc_listen: Option<String>,
    /// k used when a request does not set parameters.k (1 <= k <= classes/2).
    #[arg(long, env = "VP_DEFAULT_K", default_value_t = 3)]
    pub default_k: i64,
    /// Largest batch (N) accepted in one request.
    #[arg(long, env = "VP_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,
    /// ONNX Runtime intra-op threads.
    #[arg(long, env = "VP_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Requests taking longer than this get 408.
    #[arg(long, env = "VP_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Memory this server may use in all, in MiB (the operator passes 75 % of the container's memory
    /// limit); request bodies and inference are admitted only while they fit.
    #[arg(long, env = "VP_MEMORY_BUDGET_MIB", default_value_t = 256)]
    pub memory_budget_mib: u64,
    #[command(flatten)]
    pub limits: LimitFlags,
    /// Log format.
    #[arg(long, env = "VP_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Args {
    /// Largest request body accepted: the biggest valid JSON batch (8 bytes per value leaves room for "255, " and
    /// indentation) plus room for the envelope.
    pub fn body_limit(&self, sample_len: usize) -> usize {
        self.max_batch
            .saturating_mul(sample_len)
            .saturating_mul(8)
            .saturating_add(64 * 1024)
    }
}
