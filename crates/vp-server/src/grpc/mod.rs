//! The Open Inference Protocol v2 gRPC API (`inference.GRPCInferenceService`, compiled from the vendored
//! KServe definition by build.rs): the generated messages, client and server ([`proto`]), the request decoder
//! and reply encoder that map it onto the same request and reply types as HTTP, and the shared service.
//! Served with the same connection limits as HTTP ([`crate::conn::serve_grpc`]).

pub mod decode;
pub mod encode;
pub mod service;

pub use decode::decode_grpc;
pub use encode::encode_grpc;
pub use service::{OipBackend, OipService, status};

use std::sync::Arc;

/// Generated code of `grpc_predict_v2.proto` (package `inference`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

/// The gRPC router of a backend: messages larger than `max_message` bytes (the HTTP body limit of the same
/// server) are refused with RESOURCE_EXHAUSTED before they are decoded.
pub fn router<B: OipBackend>(backend: Arc<B>, max_message: usize) -> axum::Router {
    let svc = proto::grpc_inference_service_server::GrpcInferenceServiceServer::from_arc(Arc::new(
        OipService(backend),
    ))
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(usize::MAX);
    tonic::service::Routes::new(svc).into_axum_router()
}
