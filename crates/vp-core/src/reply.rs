//! OIP infer replies on the wire: the outputs a request asked for (all of them when it named none), each as
//! JSON `data` or, with Triton's binary tensor extension, as raw little-endian bytes after the JSON header
//! (`parameters.binary_data_size` on the output, the header's length in `Inference-Header-Content-Length`).

use crate::oip::{InferResponse, ResponseTensor, TensorData};
use crate::request::{DecodedRequest, RequestError};
use serde::Serialize;
use serde_json::{Map, Value};

/// Which outputs a reply carries, in which order, and whether each is binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyPlan {
    outputs: Vec<(String, bool)>,
}

impl ReplyPlan {
    /// The plan for `req` on a server whose replies have the outputs `available`: a named output must be one
    /// of them (and named once); its `binary_data` wins over the request's `binary_data_output`.
    pub fn new(req: &DecodedRequest, available: &[&str]) -> Result<Self, RequestError> {
        let outputs = match &req.outputs {
            None => available
                .iter()
                .map(|n| (n.to_string(), req.binary_output))
                .collect(),
            Some(list) => {
                let mut outputs: Vec<(String, bool)> = Vec::with_capacity(list.len());
                for o in list {
                    if !available.contains(&o.name.as_str()) {
                        return Err(RequestError::UnknownOutput {
                            got: o.name.chars().take(64).collect(),
                            known: available.join(", "),
                        });
                    }
                    if outputs.iter().any(|(n, _)| *n == o.name) {
                        return Err(RequestError::OutputTwice(o.name.clone()));
                    }
                    outputs.push((o.name.clone(), o.binary.unwrap_or(req.binary_output)));
                }
                outputs
            }
        };
        Ok(Self { outputs })
    }

    /// The names of the outputs the reply carries, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().map(|(n, _)| n.as_str())
    }

    /// All outputs as JSON (what a request without `outputs` and binary parameters gets).
    pub fn json(available: &[&str]) -> Self {
        Self {
            outputs: available.iter().map(|n| (n.to_string(), false)).collect(),
        }
    }
}

/// An encoded reply: the body, and the JSON header's length when the body carries binary tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedReply {
    pub body: Vec<u8>,
    pub header_len: Option<usize>,
}

#[derive(Serialize)]
struct WireReply<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Map<String, Value>>,
    outputs: Vec<WireTensor<'a>>,
}

#[derive(Serialize)]
struct WireTensor<'a> {
    name: &'a str,
    shape: &'a [usize],
    datatype: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a TensorData>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

fn byte_len(d: &TensorData) -> usize {
    match d {
        TensorData::I64(v) => v.len() * 8,
        TensorData::F32(v) => v.len() * 4,
        TensorData::F64(v) => v.len() * 8,
    }
}

fn put_bytes(d: &TensorData, out: &mut Vec<u8>) {
    match d {
        TensorData::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

/// Encodes `resp` as `plan` says. An output the plan names that `resp` lacks is left out (the plan was checked
/// against the server's outputs, so this does not happen).
pub fn encode(resp: &InferResponse, plan: &ReplyPlan) -> Result<EncodedReply, serde_json::Error> {
    let chosen: Vec<(&ResponseTensor, bool)> = plan
        .outputs
        .iter()
        .filter_map(|(name, binary)| {
            resp.outputs
                .iter()
                .find(|o| o.name == *name)
                .map(|o| (o, *binary))
        })
        .collect();
    let wire = WireReply {
        model_name: &resp.model_name,
        id: resp.id.as_deref(),
        parameters: resp.parameters.as_ref(),
        outputs: chosen
            .iter()
            .map(|(o, binary)| WireTensor {
                name: &o.name,
                shape: &o.shape,
                datatype: &o.datatype,
                parameters: binary.then(|| BinarySize {
                    binary_data_size: byte_len(&o.data),
                }),
                data: (!binary).then_some(&o.data),
            })
            .collect(),
    };
    let mut body = serde_json::to_vec(&wire)?;
    if !chosen.iter().any(|(_, binary)| *binary) {
        return Ok(EncodedReply {
            body,
            header_len: None,
        });
    }
    let header_len = body.len();
    let extra: usize = chosen
        .iter()
        .filter(|(_, b)| *b)
        .map(|(o, _)| byte_len(&o.data))
        .sum();
    body.reserve_exact(extra);
    for (o, binary) in &chosen {
        if *binary {
            put_bytes(&o.data, &mut body);
        }
    }
    Ok(EncodedReply {
        body,
        header_len: Some(header_len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::InputSpec;
    use crate::oip::topk_response;
    use crate::request::decode_infer;
    use crate::topk::TopK;

    fn spec() -> InputSpec {
        InputSpec {
            name: "image".into(),
            chw: [1, 2, 2],
            max_batch: 4,
        }
    }

    fn reply() -> InferResponse {
        let rows = vec![TopK {
            entries: vec![(3, 0.75), (1, 0.25)],
        }];
        topk_response("v0", Some("r1".into()), &rows, 2)
    }

    fn plan(json: &str) -> Result<ReplyPlan, RequestError> {
        let req = decode_infer(json.as_bytes(), None, &spec())?;
        ReplyPlan::new(&req, &["classes", "probs"])
    }

    const INPUT: &str =
        r#""inputs":[{"name":"image","shape":[1,1,2,2],"datatype":"UINT8","data":[1,2,3,4]}]"#;

    #[test]
    fn json_by_default_binary_when_asked() {
        let p = plan(&format!("{{{INPUT}}}")).expect("plan");
        let r = encode(&reply(), &p).expect("encode");
        assert_eq!(r.header_len, None);
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["outputs"][0]["data"], serde_json::json!([3, 1]));

        let p = plan(&format!(
            r#"{{{INPUT},"parameters":{{"binary_data_output":true}}}}"#
        ))
        .expect("plan");
        let r = encode(&reply(), &p).expect("encode");
        let h = r.header_len.expect("binary");
        let v: Value = serde_json::from_slice(&r.body[..h]).expect("header");
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 16);
        assert_eq!(v["outputs"][1]["parameters"]["binary_data_size"], 8);
        assert!(v["outputs"][0].get("data").is_none());
        let bin = &r.body[h..];
        assert_eq!(bin.len(), 24);
        assert_eq!(&bin[..8], &3i64.to_le_bytes());
        assert_eq!(&bin[8..16], &1i64.to_le_bytes());
        assert_eq!(&bin[16..20], &0.75f32.to_le_bytes());
        assert_eq!(&bin[20..], &0.25f32.to_le_bytes());
    }

    #[test]
    fn requested_outputs_choose_and_order() {
        let p = plan(&format!(
            r#"{{{INPUT},"outputs":[{{"name":"probs","parameters":{{"binary_data":true}}}},{{"name":"classes"}}]}}"#
        ))
        .expect("plan");
        let r = encode(&reply(), &p).expect("encode");
        let h = r.header_len.expect("binary");
        let v: Value = serde_json::from_slice(&r.body[..h]).expect("header");
        assert_eq!(v["outputs"][0]["name"], "probs");
        assert_eq!(v["outputs"][1]["data"], serde_json::json!([3, 1]));
        assert_eq!(r.body.len() - h, 8);

        let p = plan(&format!(r#"{{{INPUT},"outputs":[{{"name":"classes"}}]}}"#)).expect("plan");
        let v: Value =
            serde_json::from_slice(&encode(&reply(), &p).expect("encode").body).expect("json");
        assert_eq!(v["outputs"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn bad_output_requests_are_named() {
        for (outputs, want) in [
            (r#"[{"name":"logits"}]"#, "unknown output \"logits\""),
            (r#"[{"name":"probs"},{"name":"probs"}]"#, "twice"),
            (
                r#"[{"name":"probs","parameters":{"classification":3}}]"#,
                "unknown parameter \"classification\"",
            ),
            (
                r#"[{"name":"probs","parameters":{"binary_data":1}}]"#,
                "binary_data must be true or false, got 1",
            ),
        ] {
            let e = plan(&format!(r#"{{{INPUT},"outputs":{outputs}}}"#))
                .expect_err(want)
                .to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }
}
