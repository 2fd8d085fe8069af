//! The wires vpctl sends OIP infer requests over: HTTP with a JSON body, HTTP with Triton's binary tensor
//! extension, and gRPC (`inference.GRPCInferenceService/ModelInfer` with `raw_input_contents`). Request building
//! and reply reading only; the commands time and count the calls.

use crate::CliError;
use vp_server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use vp_server::grpc::proto::model_infer_request::InferInputTensor;
use vp_server::grpc::proto::{
    InferParameter, ModelInferRequest, ModelInferResponse, infer_parameter::ParameterChoice,
};

/// Which protocol a command talks to the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// OIP REST (JSON).
    Http,
    /// OIP gRPC.
    Grpc,
}

/// A gRPC client of one server.
pub type GrpcClient = GrpcInferenceServiceClient<tonic::transport::Channel>;

/// Connects to the gRPC endpoint at `host:port`.
pub async fn grpc_connect(addr: &str) -> Result<GrpcClient, CliError> {
    let c = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| CliError::msg(format!("cannot reach the gRPC endpoint {addr}: {e}")))?;
    Ok(c.max_decoding_message_size(64 << 20))
}

/// The input tensor's name and its shape per sample (C, H, W).
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub chw: [usize; 3],
}

impl Input {
    fn shape(&self, n: usize) -> [usize; 4] {
        [n, self.chw[0], self.chw[1], self.chw[2]]
    }
}

/// A gRPC infer request for `n` samples in `data` (raw contents), with `k` if given.
pub fn grpc_request(
    model: &str,
    input: &Input,
    n: usize,
    data: Vec<u8>,
    k: Option<usize>,
) -> ModelInferRequest {
    let mut parameters = std::collections::HashMap::new();
    if let Some(k) = k {
        parameters.insert(
            "k".to_string(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(k as i64)),
            },
        );
    }
    ModelInferRequest {
        model_name: model.to_string(),
        parameters,
        inputs: vec![InferInputTensor {
            name: input.name.clone(),
            datatype: "UINT8".into(),
            shape: input.shape(n).iter().map(|&d| d as i64).collect(),
            ..Default::default()
        }],
        raw_input_contents: vec![data.into()],
        ..Default::default()
    }
}

/// Output `name` of a gRPC reply as INT64 values.
pub fn grpc_i64(resp: &ModelInferResponse, name: &str) -> Option<Vec<i64>> {
    let i = resp.outputs.iter().position(|o| o.name == name)?;
    let raw = resp.raw_output_contents.get(i)?;
    Some(
        raw.chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                i64::from_le_bytes(b)
            })
            .collect(),
    )
}

/// Reply parameter `name` as JSON (strings that hold JSON, as the servers send lists and floats, are parsed).
pub fn grpc_param(resp: &ModelInferResponse, name: &str) -> serde_json::Value {
    match resp
        .parameters
        .get(name)
        .and_then(|p| p.parameter_choice.clone())
    {
        Some(ParameterChoice::BoolParam(b)) => b.into(),
        Some(ParameterChoice::Int64Param(i)) => i.into(),
        Some(ParameterChoice::StringParam(s)) => {
            serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s))
        }
        None => serde_json::Value::Null,
    }
}

/// A JSON infer body for `n` samples.
pub fn json_body(input: &Input, n: usize, data: &[u8], k: Option<usize>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "inputs": [{"name": input.name, "shape": input.shape(n), "datatype": "UINT8", "data": data}]
    });
    if let Some(k) = k {
        v["parameters"] = serde_json::json!({ "k": k });
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A binary-extension infer body for `n` samples (binary outputs asked for too) and its JSON header's length.
pub fn binary_body(input: &Input, n: usize, data: &[u8], k: Option<usize>) -> (Vec<u8>, usize) {
    let mut params = serde_json::json!({ "binary_data_output": true });
    if let Some(k) = k {
        params["k"] = k.into();
    }
    let header = serde_json::json!({
        "inputs": [{"name": input.name, "shape": input.shape(n), "datatype": "UINT8",
                    "parameters": {"binary_data_size": data.len()}}],
        "parameters": params
    });
    let mut body = serde_json::to_vec(&header).unwrap_or_default();
    let h = body.len();
    body.extend_from_slice(data);
    (body, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vp_core::InputSpec;

    fn input() -> Input {
        Input {
            name: "image".into(),
            chw: [1, 2, 2],
        }
    }

    fn spec() -> InputSpec {
        InputSpec {
            name: "image".into(),
            chw: [1, 2, 2],
            max_batch: 4,
        }
    }

    #[test]
    fn all_wires_carry_the_same_request() {
        let data = vec![1u8, 2, 3, 4, 5, 6, 7, 8];
        let json = vp_core::decode_infer(&json_body(&input(), 2, &data, Some(2)), None, &spec())
            .expect("json");
        let (body, h) = binary_body(&input(), 2, &data, Some(2));
        let bin = vp_core::decode_infer(&body, Some(h), &spec()).expect("binary");
        let grpc = vp_server::grpc::decode_grpc(
            grpc_request("m", &input(), 2, data.clone(), Some(2)),
            &spec(),
        )
        .expect("grpc");
        assert_eq!(json.batch, bin.batch);
        assert_eq!(json.batch, grpc.batch);
        assert_eq!(
            (json.k, bin.k, grpc.k.clone()),
            (grpc.k.clone(), grpc.k.clone(), grpc.k)
        );
        assert!(bin.binary_output);
    }

    #[test]
    fn grpc_replies_are_read_back() {
        let rows = vec![vp_core::TopK {
            entries: vec![(3, 0.75), (1, 0.25)],
        }];
        let mut resp = vp_core::oip::topk_response("v", None, &rows, 2);
        resp.parameters = Some(serde_json::Map::from_iter([
            ("variants".to_string(), serde_json::json!(["a"])),
            ("expected_accuracy".to_string(), serde_json::json!(0.5)),
        ]));
        let plan = vp_core::reply::ReplyPlan::json(&["classes", "probs"]);
        let r = vp_server::grpc::encode_grpc(resp, &plan);
        assert_eq!(grpc_i64(&r, "classes"), Some(vec![3, 1]));
        assert_eq!(grpc_i64(&r, "nope"), None);
        assert_eq!(grpc_param(&r, "variants"), serde_json::json!(["a"]));
        assert_eq!(grpc_param(&r, "expected_accuracy"), serde_json::json!(0.5));
        assert_eq!(grpc_param(&r, "missing"), serde_json::Value::Null);
    }
}
