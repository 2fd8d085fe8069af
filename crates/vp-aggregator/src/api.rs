//! API of the aggregator: OIP v2 infer for the whole ensemble (JSON and the binary tensor extension, with or
//! without a model version in the path), `/v1/classify` for image files, health, status and metrics over HTTP;
//! the same ensemble's side of the OIP gRPC service ([`Grpc`]).

use crate::Args;
use crate::fanout::{FanOut, fan_out};
use crate::image_input::{image_to_sample, inspect};
use crate::metrics::Metrics;
use crate::state::{Live, Snapshot};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::trace::TraceLayer;
use vp_core::oip::{InferResponse, ResponseTensor, TensorData};
use vp_core::reply::encode;
use vp_core::{Combined, DecodedRequest, ImageBatch, k_from_request, validate_k};
use vp_server::{Admission, ApiError, MemoryBudget, ModelPath, body_error, error_reply};

/// The outputs of the aggregator's infer reply.
pub const OUTPUTS: [&str; 2] = ["class", "scores"];

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub live: Arc<Live>,
    pub client: reqwest::Client,
    pub metrics: Arc<Metrics>,
    /// Admission for OIP infer and for /v1/classify (one shedder and one memory budget shared by both).
    pub infer_admission: Arc<Admission>,
    pub classify_admission: Arc<Admission>,
    /// `--request-timeout-ms`; the effective timeout also covers the config's deadline.
    pub request_timeout_ms: u64,
    /// `--expect-config-digest`: not ready until the config in force has this digest.
    pub expect_config_digest: Option<Arc<str>>,
}

impl AppState {
    fn budget(&self) -> &MemoryBudget {
        &self.classify_admission.budget
    }
}

/// Time a request may take beyond the ensemble's deadline (decoding, combining, replying).
pub const DEADLINE_HEADROOM_MS: u64 = 1_000;

/// The request timeout in force: `--request-timeout-ms`, raised to the config's `deadline_ms` plus headroom so
/// a long deadline gives a degraded answer rather than a 408.
pub fn request_timeout(flag_ms: u64, deadline_ms: u64) -> Duration {
    Duration::from_millis(flag_ms.max(deadline_ms.saturating_add(DEADLINE_HEADROOM_MS)))
}

async fn timeout_layer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let limit = request_timeout(s.request_timeout_ms, s.live.snapshot().config.deadline_ms);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => vp_server::timeout_error().into_response(),
    }
}

/// Largest OIP infer body: the biggest valid JSON batch plus room for the envelope.
pub fn json_limit(max_batch: usize, sample_len: usize) -> usize {
    max_batch
        .saturating_mul(sample_len)
        .saturating_mul(8)
        .saturating_add(64 * 1024)
}

/// The router: probes, metadata, status and metrics answered directly; infer and classify behind admission
/// control (load shedding and the memory budget), their body limits and the request timeout.
pub fn router(state: AppState, args: &Args) -> Router {
    let sample = state.live.snapshot().spec.sample_len();
    let json_limit = json_limit(args.max_batch, sample);
    let infer_route = Router::new()
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(from_fn_with_state(
            state.infer_admission.clone(),
            vp_server::shed::layer,
        ));
    let classify_route = Router::new()
        .route("/v1/classify", post(classify))
        .layer(DefaultBodyLimit::max(args.max_image_bytes))
        .layer(from_fn_with_state(
            state.classify_admission.clone(),
            vp_server::shed::layer,
        ));
    let inference = infer_route
        .merge(classify_route)
        .layer(from_fn_with_state(state.clone(), timeout_layer));
    Router::new()
        .route("/v2", get(|| async { Json(json!({"name": "vp-aggregator", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]})) }))
        .route("/v2/health/live", get(|| async { Json(json!({"live": true})) }))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready))
        .route("/v1/status", get(status))
        .route("/metrics", get(|State(s): State<AppState>| async move { vp_server::metrics_response(&s.metrics.registry) }))
        .merge(inference)
        .fallback(vp_server::not_found)
        .layer(axum::middleware::from_fn(vp_server::json_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Why this replica is not ready (None: ready): the config in force is not the expected one (when one is
/// expected), or fewer than `min_variants` variants are up. HTTP and gRPC readiness both ask this.
fn unready_reason(snap: &Snapshot, expect: Option<&str>) -> Option<String> {
    if let Some(want) = expect.filter(|want| *want != snap.digest) {
        return Some(format!(
            "serving config {}, expecting {want}; waiting for the mounted config to catch up",
            snap.digest
        ));
    }
    let up = snap.up_mask().count_ones() as usize;
    (up < snap.config.min_variants).then(|| {
        format!(
            "{up} variants up, fewer than min_variants = {}",
            snap.config.min_variants
        )
    })
}

fn ready_reply(snap: &Snapshot, expect: Option<&str>) -> Response {
    match unready_reason(snap, expect) {
        None => {
            let up = snap.up_mask().count_ones();
            Json(json!({"ready": true, "available_variants": up})).into_response()
        }
        Some(msg) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "error": msg, "config_digest": snap.digest})),
        )
            .into_response(),
    }
}

async fn ready(State(s): State<AppState>) -> Response {
    ready_reply(&s.live.snapshot(), s.expect_config_digest.as_deref())
}

fn check_model(snap: &Snapshot, path: &ModelPath) -> Result<(), ApiError> {
    if path.name != snap.model_name {
        return Err(ApiError::not_found(format!(
            "unknown model {:?}; this aggregator serves {:?}",
            path.name, snap.model_name
        )));
    }
    path.check_version()
}

async fn model_ready(
    State(s): State<AppState>,
    Path(path): Path<ModelPath>,
) -> Result<Response, ApiError> {
    let snap = s.live.snapshot();
    check_model(&snap, &path)?;
    Ok(ready_reply(&snap, s.expect_config_digest.as_deref()))
}

async fn model_metadata(
    State(s): State<AppState>,
    Path(path): Path<ModelPath>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let snap = s.live.snapshot();
    check_model(&snap, &path)?;
    Ok(Json(metadata(&snap)))
}

/// The ensemble's metadata (`GET /v2/models/{name}`; gRPC ModelMetadata carries all but the parameters).
fn metadata(snap: &Snapshot) -> serde_json::Value {
    let [c, h, w] = snap.spec.chw;
    let classes = snap.manifest.classes();
    json!({
        "name": snap.model_name,
        "versions": vp_server::oip_http::VERSIONS,
        "platform": "vp-ensemble",
        "inputs": [{"name": snap.spec.name, "datatype": "UINT8", "shape": [-1, c, h, w]}],
        "outputs": [
            {"name": "class", "datatype": "INT64", "shape": [-1]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, classes]}
        ],
        "parameters": {
            "family": snap.manifest.family,
            "classes": snap.manifest.dataset.classes,
            "variants": snap.endpoints.iter().map(|e| &e.name).collect::<Vec<_>>(),
            "top_k": snap.config.top_k,
            "max_k": classes / 2,
            "min_variants": snap.config.min_variants,
            "deadline_ms": snap.config.deadline_ms,
            "combine": snap.config.combine,
        }
    })
}

async fn status(State(s): State<AppState>) -> Json<serde_json::Value> {
    let snap = s.live.snapshot();
    let up = snap.up_mask();
    Json(json!({
        "model_name": snap.model_name,
        "config_digest": snap.digest,
        "expected_config_digest": s.expect_config_digest.as_deref(),
        "top_k": snap.config.top_k,
        "min_variants": snap.config.min_variants,
        "deadline_ms": snap.config.deadline_ms,
        "variants": snap.endpoints.iter().map(|e| json!({"name": e.name, "url": e.base_url, "up": e.health.is_up(), "ejected": e.health.is_ejected()})).collect::<Vec<_>>(),
        "available": snap.names(up),
        "expected_accuracy": snap.manifest.expected_accuracy(up, snap.config.top_k),
    }))
}

/// One combined answer for a batch.
struct Answer {
    mask: u64,
    combined: Vec<Combined>,
    degraded: bool,
    expected_accuracy: Option<f64>,
}

/// Fans the batch out, checks min_variants, and combines the replies sample by sample.
async fn answer(
    s: &AppState,
    snap: &Snapshot,
    batch: &ImageBatch,
    k: usize,
) -> Result<Answer, ApiError> {
    let configured = snap.endpoints.len();
    if snap.up_mask() == 0 {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no variant is available: all {configured} configured variants are down"),
        ));
    }
    let fan: FanOut = fan_out(&s.live, snap, &s.client, &s.metrics, batch, k).await;
    let answered = fan.answered();
    if answered.len() < snap.config.min_variants {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "only {} of {configured} variants answered within {} ms (min_variants = {}): {}",
                answered.len(),
                snap.config.deadline_ms,
                snap.config.min_variants,
                fan.failures()
            ),
        ));
    }
    let mask = answered.iter().fold(0u64, |m, (i, _)| m | (1u64 << i));
    let mut combined = Vec::with_capacity(batch.n);
    for row in 0..batch.n {
        let replies: Vec<_> = answered.iter().map(|(i, rows)| (*i, &rows[row])).collect();
        let c = snap.combiner.combine(&replies).ok_or_else(|| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no replies to combine")
        })?;
        combined.push(c);
    }
    let degraded = mask != snap.configured_mask;
    if degraded {
        s.metrics.degraded.inc();
    }
    Ok(Answer {
        mask,
        combined,
        degraded,
        expected_accuracy: snap.manifest.expected_accuracy(mask, k),
    })
}

fn record(s: &AppState, endpoint: &str, started: Instant, result: &Result<bool, StatusCode>) {
    let outcome = match result {
        Ok(false) => "ok",
        Ok(true) => "degraded",
        Err(st) if *st == StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        Err(st) if st.is_client_error() => "client_error",
        Err(_) => "server_error",
    };
    s.metrics
        .requests
        .with_label_values(&[endpoint, outcome])
        .inc();
    s.metrics
        .request_duration
        .with_label_values(&[endpoint])
        .observe(started.elapsed().as_secs_f64());
}

async fn infer(
    State(s): State<AppState>,
    Path(path): Path<ModelPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = infer_inner(&s, &path, &headers, body).await;
    record(
        &s,
        "infer",
        started,
        &result.as_ref().map(|(_, d)| *d).map_err(|e| e.status),
    );
    match result {
        Ok((r, _)) => r,
        Err(e) => error_reply(e),
    }
}

async fn infer_inner(
    s: &AppState,
    path: &ModelPath,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Response, bool), ApiError> {
    let snap = s.live.snapshot();
    check_model(&snap, path)?;
    let (req, plan) =
        vp_server::oip_http::decode_infer_body(headers, body, snap.spec.clone(), &OUTPUTS).await?;
    let (resp, degraded) = ensemble_reply(s, &snap, req).await?;
    let reply = encode(&resp, &plan).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reply encoding: {e}"),
        )
    })?;
    Ok((
        vp_server::infer_reply(reply.body, reply.header_len),
        degraded,
    ))
}

/// The ensemble's answer to a decoded request (both protocols), and whether it is degraded.
async fn ensemble_reply(
    s: &AppState,
    snap: &Snapshot,
    req: DecodedRequest,
) -> Result<(InferResponse, bool), ApiError> {
    let classes = snap.manifest.classes();
    let k = k_from_request(req.k.as_ref(), classes, snap.config.top_k)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let batch = req.batch;
    let a = answer(s, snap, &batch, k).await?;
    let class: Vec<i64> = a.combined.iter().map(|c| c.class as i64).collect();
    let scores: Vec<f32> = a
        .combined
        .iter()
        .flat_map(|c| c.scores.iter().map(|&x| x as f32))
        .collect();
    let mut params = serde_json::Map::new();
    params.insert("variants".into(), json!(snap.names(a.mask)));
    params.insert("degraded".into(), json!(a.degraded));
    params.insert("expected_accuracy".into(), json!(a.expected_accuracy));
    params.insert("k".into(), json!(k));
    let resp = InferResponse {
        model_name: snap.model_name.clone(),
        id: req.id,
        parameters: Some(params),
        outputs: vec![
            ResponseTensor {
                name: "class".into(),
                shape: vec![batch.n],
                datatype: "INT64".into(),
                data: TensorData::I64(class),
            },
            ResponseTensor {
                name: "scores".into(),
                shape: vec![batch.n, classes],
                datatype: "FP32".into(),
                data: TensorData::F32(scores),
            },
        ],
    };
    Ok((resp, a.degraded))
}

/// The aggregator's side of the OIP gRPC service: the same ensemble, readiness, admission (the OIP infer
/// route's), timeout and metrics (endpoint label `grpc_infer`) as HTTP.
pub struct Grpc(pub AppState);

impl vp_server::grpc::OipBackend for Grpc {
    fn server_name(&self) -> &'static str {
        "vp-aggregator"
    }
    fn ready(&self) -> bool {
        let expect = self.0.expect_config_digest.as_deref();
        unready_reason(&self.0.live.snapshot(), expect).is_none()
    }
    fn check_model(&self, path: &ModelPath) -> Result<(), ApiError> {
        check_model(&self.0.live.snapshot(), path)
    }
    fn metadata(&self) -> serde_json::Value {
        metadata(&self.0.live.snapshot())
    }
    fn spec(&self) -> vp_core::InputSpec {
        self.0.live.snapshot().spec.clone()
    }
    fn outputs(&self) -> &'static [&'static str] {
        &OUTPUTS
    }
    fn admission(&self) -> &Arc<Admission> {
        &self.0.infer_admission
    }
    fn request_timeout(&self) -> Duration {
        request_timeout(
            self.0.request_timeout_ms,
            self.0.live.snapshot().config.deadline_ms,
        )
    }
    async fn infer(
        &self,
        path: ModelPath,
        req: Result<DecodedRequest, ApiError>,
    ) -> Result<InferResponse, ApiError> {
        let started = Instant::now();
        let snap = self.0.live.snapshot();
        let result = async {
            check_model(&snap, &path)?;
            ensemble_reply(&self.0, &snap, req?).await
        }
        .await;
        record(
            &self.0,
            "grpc_infer",
            started,
            &result.as_ref().map(|(_, d)| *d).map_err(|e| e.status),
        );
        result.map(|(r, _)| r)
    }
}

/// `?k=` on /v1/classify.
#[derive(Debug, Deserialize)]
struct ClassifyQuery {
    k: Option<i64>,
}

/// One class with its combined score.
#[derive(Debug, Serialize)]
struct ScoredClass {
    class: usize,
    label: String,
    score: f64,
}

/// The /v1/classify reply.
#[derive(Debug, Serialize)]
struct ClassifyReply {
    class: usize,
    label: String,
    /// Classes with a non-zero combined score, best first.
    scores: Vec<ScoredClass>,
    variants: Vec<String>,
    degraded: bool,
    expected_accuracy: Option<f64>,
    k: usize,
}

async fn classify(
    State(s): State<AppState>,
    query: Result<Query<ClassifyQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = classify_inner(&s, query, body).await;
    record(
        &s,
        "classify",
        started,
        &result.as_ref().map(|r| r.degraded).map_err(|e| e.status),
    );
    match result {
        Ok(r) => Json(r).into_response(),
        Err(e) => error_reply(e),
    }
}

async fn classify_inner(
    s: &AppState,
    query: Result<Query<ClassifyQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<ClassifyReply, ApiError> {
    let snap = s.live.snapshot();
    let classes = snap.manifest.classes();
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))?;
    let k = match q.k {
        None => snap.config.top_k,
        Some(k) => validate_k(k, classes).map_err(|e| ApiError::bad_request(e.to_string()))?,
    };
    let body = body.map_err(body_error)?;
    let chw = snap.spec.chw;
    let unusable =
        |e: crate::ImageError| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
    // The header says how much memory decoding takes; reserve it (or refuse) before any pixel is decoded. The
    // reservation moves into the decode task, so a request that times out keeps it until the decode ends.
    let header = inspect(&body).map_err(unusable)?;
    let memory = s.budget().try_reserve(header.decode_bytes).map_err(|e| {
        if e == vp_server::BudgetError::Busy {
            s.metrics.shed.inc();
        }
        ApiError::from(e)
    })?;
    let data = tokio::task::spawn_blocking(move || {
        let _memory = memory;
        image_to_sample(&body, chw)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(unusable)?;
    let a = answer(s, &snap, &ImageBatch { n: 1, data }, k).await?;
    let c = a
        .combined
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "empty answer"))?;
    let mut scores: Vec<ScoredClass> = c
        .scores
        .iter()
        .enumerate()
        .filter(|(_, sc)| **sc > 0.0)
        .map(|(i, sc)| ScoredClass {
            class: i,
            label: snap.manifest.label(i).to_string(),
            score: *sc,
        })
        .collect();
    scores.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.class.cmp(&b.class)));
    Ok(ClassifyReply {
        class: c.class,
        label: snap.manifest.label(c.class).to_string(),
        scores,
        variants: snap.names(a.mask),
        degraded: a.degraded,
        expected_accuracy: a.expected_accuracy,
        k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_timeout_covers_the_deadline() {
        assert_eq!(request_timeout(10_000, 200), Duration::from_secs(10));
        assert_eq!(request_timeout(10_000, 60_000), Duration::from_secs(61));
        assert_eq!(
            request_timeout(0, u64::MAX),
            Duration::from_millis(u64::MAX)
        );
    }
}
