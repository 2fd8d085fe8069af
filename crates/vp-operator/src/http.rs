//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (caches synced and the controller running, or standing by as a non-leader). The metrics encoding
//! is the data plane's (vp-server).

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
