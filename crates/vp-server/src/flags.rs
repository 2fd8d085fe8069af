//! Command-line flags shared by the data-plane servers for connection limits and load shedding (each also
//! readable from a `VP_*` environment variable).

use crate::conn::ConnLimits;
use std::time::Duration;

/// Limits against slow clients and overload.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitFlags {
    /// A client that has not sent a whole request head within this time is disconnected.
    #[arg(long, env = "VP_HEADER_READ_TIMEOUT_MS", default_value_t = 5_000)]
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request in flight and no traffic for this long is closed.
    #[arg(long, env = "VP_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Most client connections open at once (further ones wait in the listen backlog).
    #[arg(long, env = "VP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Most inference requests handled at once (0: derived from the memory budget).
    #[arg(long, env = "VP_MAX_IN_FLIGHT", default_value_t = 0)]
    pub max_in_flight: usize,
    /// Most inference requests waiting for a slot; beyond this, 503 with Retry-After (default: --max-in-flight).
    #[arg(long, env = "VP_MAX_QUEUE")]
    pub max_queue: Option<usize>,
}

impl LimitFlags {
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms.max(1)),
            max_connections: self.max_connections.max(1),
        }
    }

    /// In-flight and queue limits: the flags, or as many requests as `capacity` bytes hold at `per_request`
    /// bytes each (at least 1, at most 64).
    pub fn admission(&self, capacity: u64, per_request: u64) -> (usize, usize) {
        let in_flight = if self.max_in_flight > 0 {
            self.max_in_flight
        } else {
            usize::try_from(capacity / per_request.max(1))
                .unwrap_or(usize::MAX)
                .clamp(1, 64)
        };
        (in_flight, self.max_queue.unwrap_or(in_flight))
    }
}
