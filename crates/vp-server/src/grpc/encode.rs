//! A server's infer reply ([`InferResponse`], the same one the HTTP side encodes) as a gRPC
//! `ModelInferResponse`: the outputs the request asked for, in its order, each as little-endian bytes in
//! `raw_output_contents` (what Triton sends and both official clients read); reply parameters as
//! `InferParameter`s (booleans, integers and strings as such; anything else as its JSON text).

use super::proto::model_infer_response::InferOutputTensor;
use super::proto::{InferParameter, ModelInferResponse, infer_parameter::ParameterChoice};
use serde_json::Value;
use std::collections::HashMap;
use vp_core::oip::{InferResponse, TensorData};
use vp_core::reply::ReplyPlan;

/// Encodes `resp` as `plan` says (an output the plan names that `resp` lacks is left out; the plan was checked
/// against the server's outputs).
pub fn encode_grpc(resp: InferResponse, plan: &ReplyPlan) -> ModelInferResponse {
    let mut outputs = Vec::new();
    let mut raw = Vec::new();
    for name in plan.names() {
        let Some(o) = resp.outputs.iter().find(|o| o.name == name) else {
            continue;
        };
        outputs.push(InferOutputTensor {
            name: o.name.clone(),
            datatype: o.datatype.clone(),
            shape: o.shape.iter().map(|&d| d as i64).collect(),
            parameters: HashMap::new(),
            contents: None,
        });
        raw.push(bytes::Bytes::from(le_bytes(&o.data)));
    }
    ModelInferResponse {
        model_name: resp.model_name,
        model_version: crate::oip_http::VERSIONS[0].to_string(),
        id: resp.id.unwrap_or_default(),
        parameters: resp
            .parameters
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, parameter(v)))
            .collect(),
        outputs,
        raw_output_contents: raw,
    }
}

fn le_bytes(d: &TensorData) -> Vec<u8> {
    match d {
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn parameter(v: Value) -> InferParameter {
    let choice = match v {
        Value::Bool(b) => ParameterChoice::BoolParam(b),
        Value::String(s) => ParameterChoice::StringParam(s),
        Value::Number(n) if n.as_i64().is_some() => {
            ParameterChoice::Int64Param(n.as_i64().unwrap_or_default())
        }
        other => ParameterChoice::StringParam(other.to_string()),
    };
    InferParameter {
        parameter_choice: Some(choice),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vp_core::oip::topk_response;
    use vp_core::topk::TopK;
    use vp_core::{DecodedRequest, ImageBatch, RequestedOutput};

    fn request(outputs: Option<Vec<&str>>) -> DecodedRequest {
        DecodedRequest {
            id: None,
            k: None,
            batch: ImageBatch {
                n: 1,
                data: vec![0],
            },
            binary_output: false,
            outputs: outputs.map(|l| {
                l.into_iter()
                    .map(|n| RequestedOutput {
                        name: n.into(),
                        binary: None,
                    })
                    .collect()
            }),
        }
    }

    #[test]
    fn outputs_are_raw_little_endian_in_the_requested_order() {
        let rows = vec![TopK {
            entries: vec![(3, 0.75), (1, 0.25)],
        }];
        let mut resp = topk_response("v0", Some("r1".into()), &rows, 2);
        resp.parameters = Some(serde_json::Map::from_iter([
            ("degraded".to_string(), Value::Bool(true)),
            ("k".to_string(), serde_json::json!(2)),
            ("expected_accuracy".to_string(), serde_json::json!(0.5)),
            ("variants".to_string(), serde_json::json!(["a", "b"])),
        ]));
        let plan = ReplyPlan::new(&request(None), &["classes", "probs"]).expect("plan");
        let r = encode_grpc(resp.clone(), &plan);
        assert_eq!(r.id, "r1");
        assert_eq!(r.model_version, "1");
        assert_eq!(r.outputs[0].name, "classes");
        assert_eq!(r.outputs[0].shape, [1, 2]);
        assert_eq!(r.outputs[1].datatype, "FP32");
        let mut classes = 3i64.to_le_bytes().to_vec();
        classes.extend(1i64.to_le_bytes());
        assert_eq!(r.raw_output_contents[0].as_ref(), classes);
        let mut probs = 0.75f32.to_le_bytes().to_vec();
        probs.extend(0.25f32.to_le_bytes());
        assert_eq!(r.raw_output_contents[1].as_ref(), probs);
        let p = |k: &str| r.parameters.get(k).and_then(|p| p.parameter_choice.clone());
        assert_eq!(p("degraded"), Some(ParameterChoice::BoolParam(true)));
        assert_eq!(p("k"), Some(ParameterChoice::Int64Param(2)));
        assert_eq!(
            p("expected_accuracy"),
            Some(ParameterChoice::StringParam("0.5".into()))
        );
        assert_eq!(
            p("variants"),
            Some(ParameterChoice::StringParam("[\"a\",\"b\"]".into()))
        );

        let plan =
            ReplyPlan::new(&request(Some(vec!["probs"])), &["classes", "probs"]).expect("plan");
        let r = encode_grpc(resp, &plan);
        assert_eq!(r.outputs.len(), 1);
        assert_eq!(r.outputs[0].name, "probs");
        assert_eq!(r.raw_output_contents.len(), 1);
    }
}
