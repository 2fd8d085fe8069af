//! Server plumbing shared by the variant server and the aggregator: logging set-up, shutdown on Ctrl-C/SIGTERM,
//! JSON error replies, JSON body parsing with clear messages, the `/metrics` handler, the defences against
//! hostile load (connection limits, load shedding, memory budget), the OIP gRPC service ([`grpc`]), and free
//! loopback ports for servers that other processes start ([`ports`]).

pub mod budget;
pub mod conn;
pub mod flags;
pub mod grpc;
pub mod oip_http;
pub mod ports;
pub mod shed;

pub use budget::{BudgetError, MemoryBudget, Reservation};
pub use conn::{ConnLimits, serve, serve_all, serve_grpc};
pub use flags::LimitFlags;
pub use oip_http::{ModelPath, header_length, infer_reply, json_errors};
pub use shed::{Admission, BodyCost, Overloaded, Shedder};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Installs the global tracing subscriber; the level comes from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (e.g. in tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Resolves when the process receives Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received, draining connections");
}

/// An error reply: HTTP status plus a message, sent as `{"error": "..."}` (the OIP v2 error shape).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Turns a body-read failure (too large, truncated, aborted) into a clear JSON error.
pub fn body_error(r: BytesRejection) -> ApiError {
    let status = r.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "request body is larger than this server accepts".to_string()
    } else {
        format!("could not read the request body: {}", r.body_text())
    };
    ApiError::new(status, message)
}

/// Parses a JSON body, with the parser's position in the message on failure.
pub fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(body_error)?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed request JSON: {e}")))
}

/// Encodes a registry in the Prometheus text format.
pub fn metrics_response(registry: &prometheus::Registry) -> Response {
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    match prometheus::Encoder::encode(&encoder, &registry.gather(), &mut buf) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buf).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics encoding failed: {e}"),
        )
        .into_response(),
    }
}

impl From<BudgetError> for ApiError {
    fn from(e: BudgetError) -> Self {
        let status = match e {
            BudgetError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BudgetError::Busy | BudgetError::Config { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The reply for an [`ApiError`], with `Retry-After: 1` on 503 (OIP clients retry on it).
pub fn error_reply(e: ApiError) -> Response {
    let retry = e.status == StatusCode::SERVICE_UNAVAILABLE;
    let mut r = e.into_response();
    if retry {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    r
}

/// Bodies up to this size are decoded on the async thread; larger ones on the blocking pool.
pub const INLINE_DECODE_BYTES: usize = 64 * 1024;

/// Runs `decode(body, ctx)` inline for small bodies and on the blocking pool for large ones, so decoding a large
/// batch never holds up the thread that answers probes. The number of large decodes at once is bounded by the
/// load shedder (one per admitted request).
pub async fn decode_off_thread<C, T, F>(body: Bytes, ctx: C, decode: F) -> Result<T, ApiError>
where
    C: Send + 'static,
    T: Send + 'static,
    F: FnOnce(&[u8], &C) -> T + Send + 'static,
{
    if body.len() <= INLINE_DECODE_BYTES {
        return Ok(decode(&body, &ctx));
    }
    tokio::task::spawn_blocking(move || decode(&body, &ctx))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("decode task: {e}"),
            )
        })
}

/// Reply for requests that ran past the server's request timeout.
pub fn timeout_error() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request took longer than the server's request timeout",
    )
}

/// Fallback for unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see docs/dataplane.md for the HTTP API")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[allow(dead_code)]
        a: u8,
    }

    #[test]
    fn json_bodies_get_clear_errors() {
        assert!(parse_json::<Body>(Ok(Bytes::from_static(b"{\"a\": 1}"))).is_ok());
        let e = parse_json::<Body>(Ok(Bytes::new())).expect_err("empty");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("empty"));
        let e = parse_json::<Body>(Ok(Bytes::from_static(b"{\"a\": 1"))).expect_err("cut");
        assert!(
            e.message.contains("malformed request JSON"),
            "{}",
            e.message
        );
        let e = parse_json::<Body>(Ok(Bytes::from_static(b"{\"a\": 300}"))).expect_err("range");
        assert!(e.message.contains("300"), "{}", e.message);
    }

    #[test]
    fn errors_render_as_oip_json() {
        let r = ApiError::not_found("nope").into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
