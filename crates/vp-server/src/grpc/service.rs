//! `inference.GRPCInferenceService` for any data-plane server: what differs between the variant server and the
//! aggregator (which model, readiness, metadata, the inference itself and its metrics) is the [`OipBackend`]
//! trait; everything else is here and shared: admission (load shedding and the memory budget, as on the HTTP
//! infer routes), the request timeout, decoding and checking the request, encoding the reply, and error codes
//! (400 -> INVALID_ARGUMENT, 404 -> NOT_FOUND, 503 -> UNAVAILABLE, 408 -> DEADLINE_EXCEEDED, 413 ->
//! RESOURCE_EXHAUSTED, 500 -> INTERNAL).

use super::decode::decode_grpc;
use super::encode::encode_grpc;
use super::proto::grpc_inference_service_server::GrpcInferenceService;
use super::proto::model_metadata_response::TensorMetadata;
use super::proto::*;
use crate::{Admission, ApiError, ModelPath};
use axum::http::StatusCode;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Request, Response, Status};
use vp_core::oip::InferResponse;
use vp_core::reply::ReplyPlan;
use vp_core::{DecodedRequest, InputSpec};

/// What one server contributes to the gRPC service.
pub trait OipBackend: Send + Sync + 'static {
    /// The server's name in ServerMetadata (`vp-variant`, `vp-aggregator`).
    fn server_name(&self) -> &'static str;
    /// Whether the server is ready for inference (the same answer as `/v2/health/ready`).
    fn ready(&self) -> bool;
    /// A 404 unless the path names the served model (and no version or an advertised one).
    fn check_model(&self, path: &ModelPath) -> Result<(), ApiError>;
    /// The model's metadata, the same JSON object `GET /v2/models/{name}` answers.
    fn metadata(&self) -> Value;
    /// The input the model takes.
    fn spec(&self) -> InputSpec;
    /// The outputs of an infer reply.
    fn outputs(&self) -> &'static [&'static str];
    /// Admission control shared with the HTTP infer route.
    fn admission(&self) -> &Arc<Admission>;
    /// How long one inference may take before it is answered DEADLINE_EXCEEDED.
    fn request_timeout(&self) -> Duration;
    /// Checks the model, then answers `req` (or records why it was refused) and counts it in the server's
    /// request metrics, as the HTTP infer handler does.
    fn infer(
        &self,
        path: ModelPath,
        req: Result<DecodedRequest, ApiError>,
    ) -> impl Future<Output = Result<InferResponse, ApiError>> + Send;
}

/// The gRPC service over a backend.
pub struct OipService<B>(pub Arc<B>);

/// The gRPC status for an HTTP-style error.
pub fn status(e: ApiError) -> Status {
    let code = match e.status {
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::REQUEST_TIMEOUT => Code::DeadlineExceeded,
        StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
        s if s.is_client_error() => Code::InvalidArgument,
        _ => Code::Internal,
    };
    Status::new(code, e.message)
}

fn path(name: String, version: String) -> ModelPath {
    ModelPath {
        name,
        version: (!version.is_empty()).then_some(version),
    }
}

fn tensors(v: &Value) -> Vec<TensorMetadata> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|t| TensorMetadata {
                    name: t["name"].as_str().unwrap_or_default().to_string(),
                    datatype: t["datatype"].as_str().unwrap_or_default().to_string(),
                    shape: t["shape"]
                        .as_array()
                        .map(|s| s.iter().filter_map(Value::as_i64).collect())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// ModelMetadataResponse from the HTTP metadata object (the parameters have no place in the gRPC message).
fn metadata_response(m: &Value) -> ModelMetadataResponse {
    let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
    ModelMetadataResponse {
        name: s("name"),
        versions: m["versions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        platform: s("platform"),
        inputs: tensors(&m["inputs"]),
        outputs: tensors(&m["outputs"]),
    }
}

impl<B: OipBackend> OipService<B> {
    async fn infer(
        &self,
        req: ModelInferRequest,
        size: usize,
    ) -> Result<ModelInferResponse, ApiError> {
        let b = &self.0;
        let admission = b.admission();
        let _slot = admission
            .shedder
            .admit()
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let _memory = admission
            .budget
            .try_reserve(admission.cost.of(Some(size as u64)))
            .inspect_err(|e| {
                if *e == crate::BudgetError::Busy {
                    admission.shedder.count_shed();
                }
            })?;
        let path = path(req.model_name.clone(), req.model_version.clone());
        let spec = b.spec();
        let decoded = if size <= crate::INLINE_DECODE_BYTES {
            decode_grpc(req, &spec)
        } else {
            tokio::task::spawn_blocking(move || decode_grpc(req, &spec))
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("decode task: {e}"),
                    )
                })?
        }
        .map_err(|e| ApiError::bad_request(e.to_string()))
        .and_then(|d| {
            let plan = ReplyPlan::new(&d, b.outputs())
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            Ok((d, plan))
        });
        let (decoded, plan) = match decoded {
            Ok((d, p)) => (Ok(d), Some(p)),
            Err(e) => (Err(e), None),
        };
        let resp = tokio::time::timeout(b.request_timeout(), b.infer(path, decoded))
            .await
            .map_err(|_| crate::timeout_error())??;
        let plan = plan.ok_or_else(|| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "reply plan missing")
        })?;
        Ok(encode_grpc(resp, &plan))
    }
}

#[tonic::async_trait]
impl<B: OipBackend> GrpcInferenceService for OipService<B> {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.0.ready(),
        }))
    }

    /// An unknown model or version is not ready (as Triton answers), not an error.
    async fn model_ready(
        &self,
        r: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = r.into_inner();
        let known = self.0.check_model(&path(r.name, r.version)).is_ok();
        Ok(Response::new(ModelReadyResponse {
            ready: known && self.0.ready(),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: self.0.server_name().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        self.0
            .check_model(&path(r.name, r.version))
            .map_err(status)?;
        Ok(Response::new(metadata_response(&self.0.metadata())))
    }

    async fn model_infer(
        &self,
        r: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let req = r.into_inner();
        let size = prost::Message::encoded_len(&req);
        match self.infer(req, size).await {
            Ok(resp) => Ok(Response::new(resp)),
            Err(e) => {
                tracing::debug!(status = %e.status, error = %e.message, "gRPC infer rejected");
                Err(status(e))
            }
        }
    }

    async fn repository_model_load(
        &self,
        _: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        Err(Status::unimplemented(
            "this server serves one fixed model; model repository control is not supported",
        ))
    }

    async fn repository_model_unload(
        &self,
        _: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        Err(Status::unimplemented(
            "this server serves one fixed model; model repository control is not supported",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_grpc_codes() {
        for (s, c) in [
            (StatusCode::BAD_REQUEST, Code::InvalidArgument),
            (StatusCode::NOT_FOUND, Code::NotFound),
            (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
            (StatusCode::REQUEST_TIMEOUT, Code::DeadlineExceeded),
            (StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted),
            (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
        ] {
            let st = status(ApiError::new(s, "why"));
            assert_eq!((st.code(), st.message()), (c, "why"));
        }
    }

    #[test]
    fn metadata_comes_from_the_http_object() {
        let m = serde_json::json!({
            "name": "fmnist", "versions": ["1"], "platform": "vp-ensemble",
            "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, 1, 28, 28]}],
            "outputs": [{"name": "class", "datatype": "INT64", "shape": [-1]}],
            "parameters": {"classes": 10}
        });
        let r = metadata_response(&m);
        assert_eq!(r.name, "fmnist");
        assert_eq!(r.versions, ["1"]);
        assert_eq!(r.inputs[0].shape, [-1, 1, 28, 28]);
        assert_eq!(r.outputs[0].name, "class");
    }
}
