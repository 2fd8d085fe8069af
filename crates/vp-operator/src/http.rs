//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (caches synced and the controller running, or standing by as a non-leader). The metrics encoding
//! is the data plane's (vp-server), and so are the connection limits (header-read and idle timeouts, a
//! connection cap), so slow or idle scrapers cannot pile up connections.

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared with the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Metrics to render.
    pub metrics: Metrics,
    /// Whether /readyz answers 200.
    pub ready: Arc<AtomicBool>,
}

/// Connection limits of the metrics/health server (few legitimate clients: the kubelet and Prometheus).
pub const CONN_LIMITS: vp_server::ConnLimits = vp_server::ConnLimits {
    header_read_timeout: std::time::Duration::from_secs(5),
    idle_timeout: std::time::Duration::from_secs(60),
    max_connections: 64,
};

/// Serves `app` on `listener` with [`CONN_LIMITS`] until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    vp_server::serve(listener, app, CONN_LIMITS, stop).await
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<AppState>) -> Response {
    vp_server::metrics_response(s.metrics.registry())
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
