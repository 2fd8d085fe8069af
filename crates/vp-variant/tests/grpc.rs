//! The variant server's OIP gRPC endpoint as a real process on a shipped model, driven with the generated tonic
//! client: health, readiness and metadata; raw and typed contents answer exactly what HTTP JSON answers; errors
//! carry their gRPC codes (NOT_FOUND, INVALID_ARGUMENT, OUT_OF_RANGE for an over-size message); the HTTP load
//! shedder refuses gRPC requests beyond its slots with UNAVAILABLE while the server keeps answering; gRPC
//! requests are counted in the same /metrics. The official Python gRPC clients are driven by
//! `scripts/test-oip.sh`.

use serde_json::{Value, json};
use std::collections::HashMap;
use tonic::Code;
use vp_server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use vp_server::grpc::proto::model_infer_request::InferInputTensor;
use vp_server::grpc::proto::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelMetadataRequest,
    ModelReadyRequest, ServerReadyRequest, infer_parameter::ParameterChoice,
};

mod common;

use common::{family_dir, free_port, http, start_with};

type Client = GrpcInferenceServiceClient<tonic::transport::Channel>;

fn first_variant() -> String {
    let text = std::fs::read_to_string(family_dir().join("ensemble.yaml")).expect("manifest");
    let m = vp_core::Manifest::from_yaml(&text).expect("valid manifest");
    m.variants[0].name.clone()
}

/// `n` different images.
fn pixels(n: usize) -> Vec<u8> {
    (0..n * 784)
        .map(|i| if (i / 28 + i / 784) % 7 < 3 { 250 } else { 30 })
        .collect()
}

fn request(
    model: &str,
    n: usize,
    raw: Option<Vec<u8>>,
    typed: Option<Vec<u32>>,
) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        parameters: HashMap::from([(
            "k".to_string(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(3)),
            },
        )]),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "UINT8".into(),
            shape: vec![n as i64, 1, 28, 28],
            contents: typed.map(|v| InferTensorContents {
                uint_contents: v,
                ..Default::default()
            }),
            ..Default::default()
        }],
        raw_input_contents: raw.map(|r| vec![r.into()]).unwrap_or_default(),
        ..Default::default()
    }
}

fn le_i64(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn le_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

async fn connect(port: u16) -> Client {
    GrpcInferenceServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
}

/// The value of metric `name` on the line that also has `label` (e.g. `outcome="ok"`; "" for any).
fn metric(port: u16, name: &str, label: &str) -> f64 {
    let (st, text) = http::raw(port, "GET", "/metrics", b"");
    assert_eq!(st, 200);
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn grpc_answers_like_http_with_the_same_checks_limits_and_metrics() {
    let name = first_variant();
    let grpc_port = free_port();
    let grpc_at = format!("127.0.0.1:{grpc_port}");
    let s = start_with(
        &family_dir().join("ensemble.yaml"),
        &name,
        &[
            "--max-batch",
            "256",
            "--grpc-listen",
            &grpc_at,
            "--max-in-flight",
            "1",
            "--max-queue",
            "0",
        ],
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut c = rt.block_on(connect(grpc_port));

    // Health and metadata.
    let ready = rt
        .block_on(c.server_ready(ServerReadyRequest {}))
        .expect("ready");
    assert!(ready.get_ref().ready);
    let mr = |c: &mut Client, name: &str, version: &str| {
        rt.block_on(c.model_ready(ModelReadyRequest {
            name: name.into(),
            version: version.into(),
        }))
        .expect("model ready")
        .into_inner()
        .ready
    };
    assert!(mr(&mut c, &name, "") && mr(&mut c, &name, "1"));
    assert!(!mr(&mut c, &name, "2") && !mr(&mut c, "nope", ""));
    let meta = rt
        .block_on(c.model_metadata(ModelMetadataRequest {
            name: name.clone(),
            version: String::new(),
        }))
        .expect("metadata")
        .into_inner();
    assert_eq!(
        (meta.name.as_str(), meta.versions.as_slice()),
        (name.as_str(), &["1".to_string()][..])
    );
    assert_eq!(meta.inputs[0].shape, [-1, 1, 28, 28]);
    let e = rt
        .block_on(c.model_metadata(ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        }))
        .expect_err("unknown model");
    assert_eq!(e.code(), Code::NotFound);

    // Raw and typed contents answer exactly what HTTP JSON answers.
    let ok_before = metric(s.port, "vp_variant_requests_total", "outcome=\"ok\"");
    let px = pixels(4);
    let body = serde_json::to_vec(&json!({
        "inputs": [{"name": "image", "shape": [4, 1, 28, 28], "datatype": "UINT8", "data": px}],
        "parameters": {"k": 3}
    }))
    .expect("json");
    let (st, text) = http::raw(s.port, "POST", &format!("/v2/models/{name}/infer"), &body);
    assert_eq!(st, 200, "{text}");
    let reference: Value = serde_json::from_str(&text).expect("json");
    let classes: Vec<i64> =
        serde_json::from_value(reference["outputs"][0]["data"].clone()).expect("classes");
    let probs: Vec<f32> =
        serde_json::from_value(reference["outputs"][1]["data"].clone()).expect("probs");
    for req in [
        request(&name, 4, Some(px.clone()), None),
        request(
            &name,
            4,
            None,
            Some(px.iter().map(|&b| u32::from(b)).collect()),
        ),
    ] {
        let r = rt.block_on(c.model_infer(req)).expect("infer").into_inner();
        assert_eq!(r.model_name, name);
        assert_eq!(r.outputs[0].shape, [4, 3]);
        assert_eq!(le_i64(&r.raw_output_contents[0]), classes);
        assert_eq!(le_f32(&r.raw_output_contents[1]), probs);
    }
    let ok_after = metric(s.port, "vp_variant_requests_total", "outcome=\"ok\"");
    assert_eq!(
        ok_after - ok_before,
        3.0,
        "HTTP and both gRPC requests are counted"
    );

    // Errors with their codes.
    let mut bad_shape = request(&name, 1, Some(vec![0; 784]), None);
    bad_shape.inputs[0].shape = vec![1, 1, 28, 27];
    let too_big = request(&name, 4096, Some(vec![0; 4096 * 784]), None);
    for (req, code, text) in [
        (
            request("nope", 1, Some(vec![0; 784]), None),
            Code::NotFound,
            "unknown model",
        ),
        (
            bad_shape,
            Code::InvalidArgument,
            "must have shape [N, 1, 28, 28]",
        ),
        (
            request(&name, 1, Some(vec![0; 783]), None),
            Code::InvalidArgument,
            "must hold 784 bytes, got 783",
        ),
        (too_big, Code::OutOfRange, "message length too large"),
    ] {
        let e = rt.block_on(c.model_infer(req)).expect_err(text);
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(text), "{e:?}");
    }
    let client_errors = metric(
        s.port,
        "vp_variant_requests_total",
        "outcome=\"client_error\"",
    );
    assert!(client_errors >= 3.0, "{client_errors}");

    // One slot and no queue: of 16 concurrent batch-256 requests, the ones beyond the slot are shed.
    let shed_before = metric(s.port, "vp_variant_shed_requests_total", "");
    let big = pixels(256);
    let outcomes: Vec<Result<(), Code>> = rt.block_on(async {
        let calls = (0..16).map(|_| {
            let mut c = c.clone();
            let req = request(&name, 256, Some(big.clone()), None);
            async move { c.model_infer(req).await.map(|_| ()).map_err(|e| e.code()) }
        });
        futures::future::join_all(calls).await
    });
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    let unavailable = outcomes
        .iter()
        .filter(|o| **o == Err(Code::Unavailable))
        .count();
    assert!(
        ok >= 1 && unavailable >= 1 && ok + unavailable == 16,
        "{outcomes:?}"
    );
    assert!(
        metric(s.port, "vp_variant_shed_requests_total", "") - shed_before >= unavailable as f64
    );
    // And it still answers afterwards.
    rt.block_on(c.model_infer(request(&name, 1, Some(vec![0; 784]), None)))
        .expect("answers after shedding");
}
