//! Open Inference Protocol v2 (KServe/Triton REST) wire types used by the variant server and the aggregator, and
//! the parsing of a variant's top-k reply. The aggregator's requests to its variants are encoded here, as JSON
//! or with Triton's binary tensor extension ([`encode_outgoing`]); incoming requests are decoded by
//! [`crate::request`].

use crate::topk::TopK;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A request as the aggregator sends it to a variant (serialises `data` as a flat array of numbers).
#[derive(Debug, Serialize)]
pub struct OutgoingRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub inputs: [OutgoingTensor<'a>; 1],
    pub parameters: KParam,
}

/// The single uint8 image tensor of an outgoing request.
#[derive(Debug, Serialize)]
pub struct OutgoingTensor<'a> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub datatype: &'static str,
    pub data: &'a [u8],
}

/// Request parameters the data plane understands.
#[derive(Debug, Serialize)]
pub struct KParam {
    pub k: usize,
}

/// The JSON header of a binary-extension request: the tensor's bytes follow it, `binary_data_size` long.
#[derive(Debug, Serialize)]
struct OutgoingBinaryHeader<'a> {
    inputs: [OutgoingBinaryTensor<'a>; 1],
    parameters: KParam,
}

#[derive(Debug, Serialize)]
struct OutgoingBinaryTensor<'a> {
    name: &'a str,
    shape: &'a [usize],
    datatype: &'static str,
    parameters: BinaryDataSize,
}

#[derive(Debug, Serialize)]
struct BinaryDataSize {
    binary_data_size: usize,
}

/// How the aggregator encodes the batch it sends to each variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariantWire {
    /// Triton's binary tensor extension: a small JSON header, then the raw uint8 bytes (the default: measured
    /// faster per variant request, see docs/benchmarks.md).
    #[default]
    Binary,
    /// A JSON body with the bytes as an array of numbers (for OIP servers without the binary extension).
    Json,
}

/// An encoded infer request body and, for the binary extension, its JSON header's length (the value of
/// `Inference-Header-Content-Length`).
#[derive(Debug, Clone)]
pub struct EncodedRequest {
    pub body: Vec<u8>,
    pub header_len: Option<usize>,
}

/// Encodes one uint8 tensor `name` of `shape` with `data` and top-`k` for `wire`.
pub fn encode_outgoing(
    wire: VariantWire,
    name: &str,
    shape: &[usize],
    data: &[u8],
    k: usize,
) -> Result<EncodedRequest, serde_json::Error> {
    match wire {
        VariantWire::Json => {
            let req = OutgoingRequest {
                id: None,
                inputs: [OutgoingTensor {
                    name,
                    shape: shape.to_vec(),
                    datatype: "UINT8",
                    data,
                }],
                parameters: KParam { k },
            };
            Ok(EncodedRequest {
                body: serde_json::to_vec(&req)?,
                header_len: None,
            })
        }
        VariantWire::Binary => {
            let header = OutgoingBinaryHeader {
                inputs: [OutgoingBinaryTensor {
                    name,
                    shape,
                    datatype: "UINT8",
                    parameters: BinaryDataSize {
                        binary_data_size: data.len(),
                    },
                }],
                parameters: KParam { k },
            };
            let mut body = serde_json::to_vec(&header)?;
            let header_len = body.len();
            body.extend_from_slice(data);
            Ok(EncodedRequest {
                body,
                header_len: Some(header_len),
            })
        }
    }
}

/// `infer` reply body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferResponse {
    pub model_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    pub outputs: Vec<ResponseTensor>,
}

/// One output tensor of a reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub datatype: String,
    pub data: TensorData,
}

/// Flat tensor data of a reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TensorData {
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl TensorData {
    fn as_f64(&self) -> Vec<f64> {
        match self {
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::F64(v) => v.clone(),
        }
    }
}

/// Builds a variant's reply from top-k rows: outputs `classes` (INT64 `[N, k]`) and `probs` (FP32 `[N, k]`).
pub fn topk_response(
    model_name: &str,
    id: Option<String>,
    rows: &[TopK],
    k: usize,
) -> InferResponse {
    let mut classes = Vec::with_capacity(rows.len() * k);
    let mut probs = Vec::with_capacity(rows.len() * k);
    for r in rows {
        for &(c, p) in &r.entries {
            classes.push(c as i64);
            probs.push(p);
        }
    }
    let shape = vec![rows.len(), k];
    InferResponse {
        model_name: model_name.to_string(),
        id,
        parameters: None,
        outputs: vec![
            ResponseTensor {
                name: "classes".into(),
                shape: shape.clone(),
                datatype: "INT64".into(),
                data: TensorData::I64(classes),
            },
            ResponseTensor {
                name: "probs".into(),
                shape,
                datatype: "FP32".into(),
                data: TensorData::F32(probs),
            },
        ],
    }
}

/// Reads the top-k rows out of a variant's reply, checking it answers `n` samples with `k` entries each and only
/// names classes below `classes`.
pub fn parse_topk_response(
    resp: &InferResponse,
    n: usize,
    k: usize,
    classes: usize,
) -> Result<Vec<TopK>, String> {
    let find = |name: &str| {
        resp.outputs
            .iter()
            .find(|o| o.name == name)
            .ok_or_else(|| format!("reply has no output named {name:?}"))
    };
    let (c, p) = (find("classes")?, find("probs")?);
    if c.shape != [n, k] || p.shape != [n, k] {
        return Err(format!(
            "reply shapes {:?}/{:?}, expected [{n}, {k}]",
            c.shape, p.shape
        ));
    }
    let (cv, pv) = (c.data.as_f64(), p.data.as_f64());
    if cv.len() != n * k || pv.len() != n * k {
        return Err("reply data length does not match its shape".into());
    }
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let mut entries = Vec::with_capacity(k);
        for j in i * k..(i + 1) * k {
            let cls = cv[j];
            if !(cls >= 0.0 && cls.fract() == 0.0 && (cls as usize) < classes) {
                return Err(format!("reply names class {cls}, outside 0..{classes}"));
            }
            let prob = pv[j];
            if !(0.0..=1.0 + 1e-6).contains(&prob) {
                return Err(format!("reply has probability {prob}, outside [0, 1]"));
            }
            entries.push((cls as usize, prob as f32));
        }
        rows.push(TopK { entries });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_variant_wires_decode_to_the_same_batch_and_k() {
        use crate::request::{KValue, decode_infer};
        let spec = crate::InputSpec {
            name: "image".into(),
            chw: [1, 2, 3],
            max_batch: 8,
        };
        let data: Vec<u8> = (0..12).map(|i| (i * 21) as u8).collect();
        for wire in [VariantWire::Json, VariantWire::Binary] {
            let e = encode_outgoing(wire, "image", &[2, 1, 2, 3], &data, 5).expect("encode");
            assert_eq!(e.header_len.is_some(), wire == VariantWire::Binary);
            let d = decode_infer(&e.body, e.header_len, &spec).expect("decode");
            assert_eq!((d.batch.n, &d.batch.data), (2, &data), "{wire:?}");
            assert_eq!(d.k, Some(KValue::Int(5)), "{wire:?}");
        }
        let json =
            encode_outgoing(VariantWire::Json, "image", &[2, 1, 2, 3], &data, 5).expect("json");
        let bin =
            encode_outgoing(VariantWire::Binary, "image", &[2, 1, 2, 3], &data, 5).expect("binary");
        assert!(bin.body.len() < json.body.len());
        assert_eq!(
            serde_yaml::from_str::<VariantWire>("json").expect("yaml"),
            VariantWire::Json
        );
        assert!(serde_yaml::from_str::<VariantWire>("grpc").is_err());
    }

    #[test]
    fn topk_reply_round_trips_through_json() {
        let rows = vec![
            TopK {
                entries: vec![(3, 0.7), (1, 0.2)],
            },
            TopK {
                entries: vec![(0, 0.5), (9, 0.25)],
            },
        ];
        let resp = topk_response("v0", Some("r1".into()), &rows, 2);
        let text = serde_json::to_string(&resp).expect("json");
        assert!(text.contains("\"datatype\":\"INT64\""), "{text}");
        let back: InferResponse = serde_json::from_str(&text).expect("parse");
        assert_eq!(parse_topk_response(&back, 2, 2, 10), Ok(rows));
    }

    #[test]
    fn bad_replies_are_rejected() {
        let rows = vec![TopK {
            entries: vec![(3, 0.7)],
        }];
        let resp = topk_response("v0", None, &rows, 1);
        assert!(parse_topk_response(&resp, 2, 1, 10).is_err());
        assert!(
            parse_topk_response(&resp, 1, 1, 3)
                .expect_err("should fail")
                .contains("outside")
        );
        let mut r2 = resp.clone();
        r2.outputs.remove(0);
        assert!(
            parse_topk_response(&r2, 1, 1, 10)
                .expect_err("should fail")
                .contains("classes")
        );
    }

    #[test]
    fn outgoing_request_is_oip_json() {
        let data = [0u8, 255, 7];
        let req = OutgoingRequest {
            id: None,
            inputs: [OutgoingTensor {
                name: "image",
                shape: vec![1, 1, 1, 3],
                datatype: "UINT8",
                data: &data,
            }],
            parameters: KParam { k: 2 },
        };
        let v: Value = serde_json::to_value(&req).expect("json");
        assert_eq!(v["inputs"][0]["data"], serde_json::json!([0, 255, 7]));
        assert_eq!(v["parameters"]["k"], 2);
        let spec = crate::InputSpec {
            name: "image".into(),
            chw: [1, 1, 3],
            max_batch: 1,
        };
        let body = serde_json::to_vec(&v).expect("bytes");
        let parsed = crate::request::decode_request(&body, &spec).expect("back");
        assert_eq!(parsed.batch.data, data);
        assert_eq!(parsed.k, Some(crate::request::KValue::Int(2)));
    }
}
