//! HTTP glue of the OIP endpoints shared by both servers: the model path with its optional version
//! (`/v2/models/{name}[/versions/{version}]/…`), the binary tensor extension's `Inference-Header-Content-Length`
//! header on requests and replies, and a layer that gives every error reply the documented JSON shape
//! `{"error": "..."}`, including the ones the router makes itself (405, extractor rejections).

use crate::ApiError;
use axum::body::Bytes;
use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vp_core::reply::ReplyPlan;
use vp_core::{DecodedRequest, InputSpec, decode_infer};

/// The versions every model of this data plane advertises in its metadata (a server serves one model file).
pub const VERSIONS: [&str; 1] = ["1"];

/// The binary tensor extension's header: the length of the JSON part of a body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// `{name}` and the optional `{version}` of a model path.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelPath {
    pub name: String,
    pub version: Option<String>,
}

impl ModelPath {
    /// A 404 unless the path names no version or one of [`VERSIONS`].
    pub fn check_version(&self) -> Result<(), ApiError> {
        match &self.version {
            Some(v) if !VERSIONS.contains(&v.as_str()) => Err(ApiError::not_found(format!(
                "model {:?} has no version {:?}; its versions are {VERSIONS:?}",
                self.name,
                v.chars().take(64).collect::<String>()
            ))),
            _ => Ok(()),
        }
    }
}

/// The server-independent half of an HTTP infer handler: reads the body, decodes it against `spec` (JSON, or the
/// binary tensor extension when the request has its header) off the async thread when it is large, and plans the
/// reply's encoding for the server's `outputs`. Every failure is a 400 (413 for an over-size body).
pub async fn decode_infer_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    spec: InputSpec,
    outputs: &[&str],
) -> Result<(DecodedRequest, ReplyPlan), ApiError> {
    let header_len = header_length(headers)?;
    let body = body.map_err(crate::body_error)?;
    let req =
        crate::decode_off_thread(body, spec, move |b, spec| decode_infer(b, header_len, spec))
            .await?
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let plan = ReplyPlan::new(&req, outputs).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((req, plan))
}

/// The `Inference-Header-Content-Length` of a request, if it has one; a 400 if it is not a byte count.
pub fn header_length(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(v) = headers.get(HEADER_LENGTH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Inference-Header-Content-Length must be a byte count, got {:?}",
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(40)
                    .collect::<String>()
            ))
        })
}

/// A 200 infer reply: JSON, or with `header_len` the binary extension's JSON header followed by raw tensors.
pub fn infer_reply(body: Vec<u8>, header_len: Option<usize>) -> Response {
    match header_len {
        None => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Some(h) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    header::HeaderName::from_static(HEADER_LENGTH),
                    HeaderValue::from(h),
                ),
            ],
            body,
        )
            .into_response(),
    }
}

/// The method the data plane's paths take (the router's 405 carries no `Allow` header): inference POST,
/// everything else GET.
fn allowed_method(path: &str) -> &'static str {
    if path.ends_with("/infer") || path == "/v1/classify" {
        "POST"
    } else {
        "GET"
    }
}

/// Largest error body rewritten; a longer one is replaced by the status text.
const ERROR_BODY_LIMIT: usize = 16 * 1024;

/// Middleware: an error reply (4xx/5xx) whose body is not JSON gets the JSON error shape, keeping its status
/// and headers (a 405 names the allowed method, also in `Allow`); a 413 says `Connection: close`.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(200).collect();
    let mut reply = next.run(req).await;
    let status = reply.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The body was refused unread, so the server closes the connection after this reply; saying so keeps a
        // keep-alive client from sending its next request on it (it would fail with an incomplete message).
        reply
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let is_json = reply
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return reply;
    }
    let (mut parts, body) = reply.into_parts();
    let text = to_bytes(body, ERROR_BODY_LIMIT).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = match parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
        {
            Some(a) if !a.is_empty() => a.to_string(),
            _ => allowed_method(&path).to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&allow) {
            parts.headers.insert(header::ALLOW, v);
        }
        format!("method {method} is not allowed on {path}; allowed: {allow}")
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let body = serde_json::json!({ "error": message }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_header_lengths() {
        let p = |v: Option<&str>| ModelPath {
            name: "m".into(),
            version: v.map(String::from),
        };
        assert!(p(None).check_version().is_ok());
        assert!(p(Some("1")).check_version().is_ok());
        let e = p(Some("2")).check_version().expect_err("unknown version");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert!(e.message.contains("no version \"2\""), "{}", e.message);

        let mut h = HeaderMap::new();
        assert_eq!(header_length(&h).expect("none"), None);
        h.insert(HEADER_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(header_length(&h).expect("twelve"), Some(12));
        for bad in ["-1", "x", "1.5", ""] {
            h.insert(HEADER_LENGTH, HeaderValue::from_static(bad));
            let e = header_length(&h).expect_err(bad);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }

    #[tokio::test]
    async fn a_refused_body_closes_the_connection() {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route(
                "/big",
                axum::routing::post(|| async { StatusCode::PAYLOAD_TOO_LARGE }),
            )
            .route(
                "/ok",
                axum::routing::post(|| async { StatusCode::BAD_REQUEST }),
            )
            .layer(axum::middleware::from_fn(json_errors));
        let call = |path: &'static str| {
            app.clone()
                .oneshot(Request::post(path).body(Body::empty()).expect("request"))
        };
        let r = call("/big").await.expect("reply");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            r.headers().get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
        let r = call("/ok").await.expect("reply");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.headers().get(header::CONNECTION).is_none());
    }
}
