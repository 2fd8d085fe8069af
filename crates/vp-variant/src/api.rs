//! API of the variant server: OIP v2 REST (JSON and the binary tensor extension, with or without a model
//! version in the path: health, metadata, infer, metrics) and the same model's side of the OIP gRPC service.

use crate::Args;
use crate::loader::{LoadError, Loaded};
use crate::metrics::Metrics;
use crate::session::{Probe, SessionHealth};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use vp_core::oip::{InferResponse, topk_response};
use vp_core::reply::encode;
use vp_core::{DecodedRequest, InputSpec, k_from_request, top_k};
use vp_infer::Model;
use vp_server::{Admission, ApiError, BodyCost, MemoryBudget, ModelPath, Shedder};

/// Shared state of the server.
pub struct AppState {
    pub name: String,
    pub family: String,
    pub sha256: String,
    pub classes: usize,
    pub default_k: usize,
    pub spec: InputSpec,
    pub model: Arc<Mutex<Model>>,
    pub ready: AtomicBool,
    /// Whether the model session still works (every inference's outcome; the probes' self-tests).
    pub session: SessionHealth,
    pub metrics: Metrics,
    /// The one thread that runs batches too large to run inline (or any batch while the model is busy).
    worker: Arc<Semaphore>,
    pub admission: Arc<Admission>,
    /// `--request-timeout-ms`.
    pub request_timeout: Duration,
}

/// Memory the server keeps for itself out of `--memory-budget-mib`: runtime, ONNX Runtime with the loaded model,
/// and the inference worker's activations at `--max-batch` (a variant at rest after a batch-256 inference: about
/// 60 MiB RSS, see docs/dataplane.md).
pub const RESERVE_MIB: u64 = 96;

impl AppState {
    pub fn new(args: &Args, loaded: Loaded) -> Result<Self, LoadError> {
        let Loaded {
            manifest,
            entry,
            model,
        } = loaded;
        let metrics = Metrics::new(&manifest.family, &entry.name, &entry.sha256)
            .map_err(|e| LoadError::Flag(format!("metrics registry: {e}")))?;
        let spec = InputSpec::from_manifest(&manifest, args.max_batch);
        let budget = MemoryBudget::new(args.memory_budget_mib, RESERVE_MIB)
            .map_err(|e| LoadError::Flag(e.to_string()))?;
        // Body bytes, plus the decoded tensor (at most half the body for JSON, where each value takes at least 2
        // characters; at most the body for the binary extension), plus the reply and the request's share of the
        // runtime.
        let cost = BodyCost {
            limit: args.body_limit(spec.sample_len()) as u64,
            per_byte: 2,
            fixed: 64 * 1024,
        };
        if cost.worst() > budget.capacity() {
            return Err(LoadError::Flag(format!(
                "--memory-budget-mib {} is too small for --max-batch {}: one request may need {} MiB",
                args.memory_budget_mib,
                args.max_batch,
                cost.worst().div_ceil(1 << 20)
            )));
        }
        let (in_flight, queue) = args.limits.admission(budget.capacity(), cost.worst());
        let shedder = Arc::new(Shedder::new(in_flight, queue, metrics.shed.clone()));
        Ok(Self {
            name: entry.name.clone(),
            family: manifest.family.clone(),
            sha256: entry.sha256.clone(),
            classes: manifest.classes(),
            default_k: args.default_k as usize,
            spec,
            model: Arc::new(Mutex::new(model)),
            ready: AtomicBool::new(false),
            session: SessionHealth::default(),
            metrics,
            worker: Arc::new(Semaphore::new(1)),
            admission: Arc::new(Admission {
                shedder,
                budget,
                cost,
            }),
            request_timeout: Duration::from_millis(args.request_timeout_ms),
        })
    }

    /// One inference on an all-zero sample so the first real request does not pay for lazy initialisation.
    pub async fn warm_up(&self) -> Result<(), String> {
        let zeros = vec![0u8; self.spec.sample_len()];
        self.infer(zeros, 1)
            .await
            .map(|_| ())
            .map_err(|e| e.message)
    }

    /// Runs the model. Small batches run inline on the async worker when the model is free (a batch-1
    /// inference of these models takes tens to hundreds of microseconds, less than handing it to another thread
    /// and back); larger batches, and any batch while the model is busy, go to the one inference worker thread,
    /// so the async thread that answers probes never waits for the model. The worker slot travels with the job,
    /// so a request that times out still holds it until its inference ends: at most one runs off-thread.
    async fn infer(&self, data: Vec<u8>, n: usize) -> Result<Vec<f32>, ApiError> {
        let started = Instant::now();
        let inline = if n <= INLINE_BATCH {
            match self.model.try_lock() {
                Ok(mut m) => Some(m.run(&data, n).map_err(|e| e.to_string())),
                Err(TryLockError::WouldBlock) => None,
                Err(TryLockError::Poisoned(_)) => Some(Err("model lock poisoned".to_string())),
            }
        } else {
            None
        };
        let out = match inline {
            Some(r) => r,
            None => {
                let slot =
                    self.worker.clone().acquire_owned().await.map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    })?;
                let model = self.model.clone();
                tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    let mut m = model
                        .lock()
                        .map_err(|_| "model lock poisoned".to_string())?;
                    m.run(&data, n).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
            }
        };
        self.session
            .record(out.as_ref().map(|_| ()).map_err(String::as_str));
        let out = out.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        self.metrics
            .inference_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// The session's health as `probe` sees it, after a one-sample self-test when the probe wants one and
    /// the model is free (inline: one sample takes well under a millisecond with these models).
    fn session_health(&self, probe: Probe) -> Result<(), String> {
        if self.session.wants_self_test(probe) {
            let zeros = vec![0u8; self.spec.sample_len()];
            let outcome = match self.model.try_lock() {
                Ok(mut m) => Some(m.run(&zeros, 1).map(|_| ()).map_err(|e| e.to_string())),
                Err(TryLockError::WouldBlock) => None,
                Err(TryLockError::Poisoned(_)) => Some(Err("model lock poisoned".to_string())),
            };
            if let Some(o) = outcome {
                self.session
                    .record(o.as_ref().map(|_| ()).map_err(String::as_str));
            }
        }
        self.session.verdict()
    }

    /// Why the server is not ready (None: ready): warming up, or its last inference failed. HTTP and gRPC
    /// readiness both ask this.
    pub fn unready_reason(&self) -> Option<String> {
        match (
            self.ready.load(Ordering::SeqCst),
            self.session_health(Probe::Ready),
        ) {
            (_, Err(e)) => Some(e),
            (false, Ok(())) => Some("model is warming up".to_string()),
            (true, Ok(())) => None,
        }
    }

    /// The model's metadata (`GET /v2/models/{name}`; gRPC ModelMetadata carries all but the parameters).
    pub fn metadata(&self) -> serde_json::Value {
        let [c, h, w] = self.spec.chw;
        json!({
            "name": self.name,
            "versions": vp_server::oip_http::VERSIONS,
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": self.spec.name, "datatype": "UINT8", "shape": [-1, c, h, w]}],
            "outputs": [
                {"name": "classes", "datatype": "INT64", "shape": [-1, -1]},
                {"name": "probs", "datatype": "FP32", "shape": [-1, -1]}
            ],
            "parameters": {
                "family": self.family,
                "sha256": self.sha256,
                "classes": self.classes,
                "default_k": self.default_k,
                "max_k": self.classes / 2,
                "max_batch": self.spec.max_batch
            }
        })
    }

    /// Counts one infer request (HTTP or gRPC) in the request metrics.
    pub fn record<T>(&self, started: Instant, result: &Result<T, ApiError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) if e.status.is_client_error() => "client_error",
            Err(_) => "server_error",
        };
        self.metrics.requests.with_label_values(&[outcome]).inc();
        self.metrics
            .request_duration
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Answers a decoded request: its k, the model, the top-k reply (both protocols).
    pub async fn answer(&self, req: DecodedRequest) -> Result<InferResponse, ApiError> {
        let k = k_from_request(req.k.as_ref(), self.classes, self.default_k)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let batch = req.batch;
        if !self.ready.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "model is warming up; retry shortly",
            ));
        }
        let probs = self.infer(batch.data, batch.n).await?;
        let rows: Vec<_> = probs
            .chunks(self.classes)
            .map(|row| top_k(row, k))
            .collect();
        Ok(topk_response(&self.name, req.id, &rows, k))
    }

    pub fn check_model(&self, path: &ModelPath) -> Result<(), ApiError> {
        if path.name != self.name {
            return Err(ApiError::not_found(format!(
                "unknown model {:?}; this server serves {:?}",
                path.name, self.name
            )));
        }
        path.check_version()
    }
}

type Shared = Arc<AppState>;

/// The outputs of a variant's reply.
pub const OUTPUTS: [&str; 2] = ["classes", "probs"];

/// Largest batch run inline on the async worker.
const INLINE_BATCH: usize = 4;

/// The router: probes, metadata and metrics answered directly; infer behind admission control (load shedding and
/// the memory budget), the body limit and the request timeout.
pub fn router(state: Shared, args: &Args) -> Router {
    let limit = args.body_limit(state.spec.sample_len());
    let inference = Router::new()
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.admission.clone(),
            vp_server::shed::layer,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(args.request_timeout_ms),
        ));
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready),
        )
        .route(
            "/metrics",
            get(|State(s): State<Shared>| async move {
                vp_server::metrics_response(&s.metrics.registry)
            }),
        )
        .merge(inference)
        .fallback(vp_server::not_found)
        .layer(axum::middleware::from_fn(vp_server::json_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn server_metadata() -> Json<serde_json::Value> {
    Json(
        json!({"name": "vp-variant", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
    )
}

/// The gRPC side of the same server: same model, readiness, admission, timeout and metrics.
impl vp_server::grpc::OipBackend for AppState {
    fn server_name(&self) -> &'static str {
        "vp-variant"
    }
    fn ready(&self) -> bool {
        self.unready_reason().is_none()
    }
    fn check_model(&self, path: &ModelPath) -> Result<(), ApiError> {
        AppState::check_model(self, path)
    }
    fn metadata(&self) -> serde_json::Value {
        AppState::metadata(self)
    }
    fn spec(&self) -> InputSpec {
        self.spec.clone()
    }
    fn outputs(&self) -> &'static [&'static str] {
        &OUTPUTS
    }
    fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }
    fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
    async fn infer(
        &self,
        path: ModelPath,
        req: Result<DecodedRequest, ApiError>,
    ) -> Result<InferResponse, ApiError> {
        let started = Instant::now();
        let result = async {
            self.check_model(&path)?;
            self.answer(req?).await
        }
        .await;
        self.record(started, &result);
        result
    }
}

/// Live while the model session works: a server whose every inference fails answers 500, so the kubelet
/// restarts it.
async fn live(State(s): State<Shared>) -> Response {
    match s.session_health(Probe::Live) {
        Ok(()) => Json(json!({"live": true})).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"live": false, "error": e})),
        )
            .into_response(),
    }
}

/// Ready once warmed up and while the last inference succeeded.
fn ready_reply(s: &AppState) -> Response {
    match s.unready_reason() {
        None => Json(json!({"ready": true})).into_response(),
        Some(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "error": error})),
        )
            .into_response(),
    }
}

async fn ready(State(s): State<Shared>) -> Response {
    ready_reply(&s)
}

async fn model_ready(
    State(s): State<Shared>,
    Path(path): Path<ModelPath>,
) -> Result<Response, ApiError> {
    s.check_model(&path)?;
    Ok(ready_reply(&s))
}

async fn model_metadata(
    State(s): State<Shared>,
    Path(path): Path<ModelPath>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.check_model(&path)?;
    Ok(Json(s.metadata()))
}

async fn infer(
    State(s): State<Shared>,
    Path(path): Path<ModelPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = infer_inner(&s, &path, &headers, body).await;
    s.record(started, &result);
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(status = %e.status, error = %e.message, "infer rejected");
            vp_server::error_reply(e)
        }
    }
}

async fn infer_inner(
    s: &AppState,
    path: &ModelPath,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    s.check_model(path)?;
    let (req, plan) =
        vp_server::oip_http::decode_infer_body(headers, body, s.spec.clone(), &OUTPUTS).await?;
    let reply = encode(&s.answer(req).await?, &plan).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reply encoding: {e}"),
        )
    })?;
    Ok(vp_server::infer_reply(reply.body, reply.header_len))
}
