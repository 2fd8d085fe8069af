//! Fuzz target: a gRPC `ModelInferRequest` from arbitrary bytes, through prost's decoder and then the servers'
//! own checks (`vp_server::grpc::decode_grpc`). Neither may panic, and whatever is accepted must be a
//! well-formed batch of the spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use vp_core::InputSpec;
use vp_server::grpc::decode_grpc;
use vp_server::grpc::proto::ModelInferRequest;

fuzz_target!(|data: &[u8]| {
    let spec = InputSpec {
        name: "image".into(),
        chw: [1, 2, 3],
        max_batch: 8,
    };
    let Ok(req) = ModelInferRequest::decode(data) else {
        return;
    };
    if let Ok(r) = decode_grpc(req, &spec) {
        assert!((1..=8).contains(&r.batch.n));
        assert_eq!(r.batch.data.len(), r.batch.n * 6);
    }
});
