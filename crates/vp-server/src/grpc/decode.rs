//! A gRPC `ModelInferRequest` checked against the family's input spec and turned into the same
//! [`DecodedRequest`] the HTTP decoder makes, with the same checks and messages: one `UINT8` input of shape
//! `[N, C, H, W]` with `1 <= N <= max_batch`, its values either in `raw_input_contents` (exactly N*C*H*W bytes)
//! or in `contents.uint_contents` (exactly that many values, each 0..=255), never both; request parameters
//! `k` (alias `top_k`, an `int64_param`) and nothing else; an input's `binary_data_size` (the KServe client
//! sends it with raw contents; it must equal their size); a requested output's `binary_data` (a boolean, moot
//! over gRPC, where outputs are always raw).

use super::proto::model_infer_request::InferInputTensor;
use super::proto::{InferParameter, InferTensorContents, ModelInferRequest, infer_parameter};
use std::collections::HashMap;
use vp_core::request::batch_of;
use vp_core::{
    DecodedRequest, ImageBatch, InputError, InputSpec, KValue, RequestError, RequestedOutput,
};

/// Request parameters read over gRPC.
const REQUEST_PARAMS: &str = "k (alias top_k)";

/// Decodes `req` against `spec`; the request itself is consumed so the raw tensor is moved, not copied.
pub fn decode_grpc(
    req: ModelInferRequest,
    spec: &InputSpec,
) -> Result<DecodedRequest, RequestError> {
    let k = k_param(&req.parameters)?;
    let outputs = req
        .outputs
        .iter()
        .map(|o| {
            for (name, value) in &o.parameters {
                if name != "binary_data" {
                    return Err(RequestError::UnknownParameter {
                        place: "outputs[].parameters",
                        name: clip(name),
                        known: "binary_data (gRPC replies are always raw_output_contents)",
                    });
                }
                if !matches!(
                    value.parameter_choice,
                    Some(infer_parameter::ParameterChoice::BoolParam(_))
                ) {
                    return Err(RequestError::ParameterType {
                        place: "outputs[].parameters",
                        name: "binary_data",
                        expected: "a bool_param",
                        got: describe(value),
                    });
                }
            }
            Ok(RequestedOutput {
                name: o.name.clone(),
                binary: None,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ModelInferRequest {
        id,
        mut inputs,
        mut raw_input_contents,
        ..
    } = req;
    if inputs.len() != 1 {
        return Err(InputError::InputCount {
            expected: spec.name.clone(),
            got: inputs.len(),
        }
        .into());
    }
    let input = inputs.remove(0);
    let raw = match raw_input_contents.len() {
        0 => None,
        1 => Some(raw_input_contents.remove(0)),
        n => {
            return Err(RequestError::Binary(format!(
                "raw_input_contents has {n} entries but the request has 1 input"
            )));
        }
    };
    let batch = check_input(input, raw, spec)?;
    Ok(DecodedRequest {
        id: (!id.is_empty()).then_some(id),
        k,
        batch,
        binary_output: false,
        outputs: (!outputs.is_empty()).then_some(outputs),
    })
}

/// `k` or `top_k` from the request parameters; any other name is an error.
fn k_param(params: &HashMap<String, InferParameter>) -> Result<Option<KValue>, RequestError> {
    let mut k = None;
    for (name, value) in params {
        if name != "k" && name != "top_k" {
            return Err(RequestError::UnknownParameter {
                place: "parameters",
                name: clip(name),
                known: REQUEST_PARAMS,
            });
        }
        if k.is_some() {
            return Err(RequestError::KTwice);
        }
        k = Some(match &value.parameter_choice {
            Some(infer_parameter::ParameterChoice::Int64Param(v)) => KValue::Int(*v),
            _ => KValue::Other(describe(value)),
        });
    }
    Ok(k)
}

/// A parameter's value for messages.
fn describe(p: &InferParameter) -> String {
    match &p.parameter_choice {
        Some(infer_parameter::ParameterChoice::Int64Param(v)) => format!("int64_param {v}"),
        Some(infer_parameter::ParameterChoice::BoolParam(b)) => format!("bool_param {b}"),
        Some(infer_parameter::ParameterChoice::StringParam(s)) => {
            format!("string_param {:?}", clip(s))
        }
        None => "a parameter with no value this server knows (uint64 or double)".into(),
    }
}

fn check_input(
    t: InferInputTensor,
    raw: Option<bytes::Bytes>,
    spec: &InputSpec,
) -> Result<ImageBatch, RequestError> {
    let [c, h, w] = spec.chw;
    if t.name != spec.name {
        return Err(InputError::Name {
            expected: spec.name.clone(),
            got: clip(&t.name),
        }
        .into());
    }
    let name = t.name;
    if t.datatype != "UINT8" {
        return Err(InputError::Datatype {
            name,
            got: clip(&t.datatype),
        }
        .into());
    }
    let mut declared = None;
    for (p, value) in &t.parameters {
        if p != "binary_data_size" {
            return Err(RequestError::UnknownParameter {
                place: "inputs[].parameters",
                name: clip(p),
                known: "binary_data_size",
            });
        }
        match value.parameter_choice {
            Some(infer_parameter::ParameterChoice::Int64Param(v)) => declared = Some(v),
            _ => {
                return Err(RequestError::ParameterType {
                    place: "inputs[].parameters",
                    name: "binary_data_size",
                    expected: "an int64_param",
                    got: describe(value),
                });
            }
        }
    }
    let shape: Vec<i64> = t.shape.iter().take(8).copied().collect();
    let n = batch_of(&t.shape, spec).ok_or_else(|| InputError::Shape {
        name: name.clone(),
        c,
        h,
        w,
        max_batch: spec.max_batch,
        got: shape.clone(),
    })?;
    let expected = n * spec.sample_len();
    let typed = t.contents.filter(|c| !is_empty(c));
    match (raw, typed) {
        (Some(_), Some(_)) => Err(RequestError::Binary(format!(
            "input {name:?} has both contents and raw_input_contents; give one"
        ))),
        (None, Some(_)) if declared.is_some() => Err(RequestError::Binary(format!(
            "input {name:?} declares parameters.binary_data_size but has no raw_input_contents"
        ))),
        (Some(raw), None) => {
            if let Some(d) = declared.filter(|&d| d != raw.len() as i64) {
                return Err(RequestError::Binary(format!(
                    "input {name:?} declares binary_data_size {d} but its raw_input_contents hold {} bytes",
                    raw.len()
                )));
            }
            if raw.len() != expected {
                return Err(RequestError::Binary(format!(
                    "input {name:?} has shape {shape:?} of UINT8 (1 byte each), so its raw_input_contents must \
                     hold {expected} bytes, got {}",
                    raw.len()
                )));
            }
            Ok(ImageBatch {
                n,
                data: raw.to_vec(),
            })
        }
        (None, Some(contents)) => {
            typed_values(&name, &shape, expected, contents).map(|data| ImageBatch { n, data })
        }
        (None, None) => Err(RequestError::Json(format!(
            "input {name:?} has neither contents.uint_contents nor raw_input_contents"
        ))),
    }
}

/// The values of `contents.uint_contents`, each checked to be a UINT8; any other contents field is an error.
fn typed_values(
    name: &str,
    shape: &[i64],
    expected: usize,
    c: InferTensorContents,
) -> Result<Vec<u8>, RequestError> {
    let other = [
        ("bool_contents", c.bool_contents.len()),
        ("int_contents", c.int_contents.len()),
        ("int64_contents", c.int64_contents.len()),
        ("uint64_contents", c.uint64_contents.len()),
        ("fp32_contents", c.fp32_contents.len()),
        ("fp64_contents", c.fp64_contents.len()),
        ("bytes_contents", c.bytes_contents.len()),
    ];
    if let Some((field, _)) = other.iter().find(|(_, n)| *n > 0) {
        return Err(RequestError::Binary(format!(
            "input {name:?} is UINT8, so its values go in contents.uint_contents, not contents.{field}"
        )));
    }
    if c.uint_contents.len() != expected {
        return Err(InputError::DataLength {
            name: name.to_string(),
            shape: shape.to_vec(),
            expected,
            got: c.uint_contents.len(),
        }
        .into());
    }
    c.uint_contents
        .iter()
        .enumerate()
        .map(|(index, &v)| {
            u8::try_from(v).map_err(|_| {
                RequestError::from(InputError::DataValue {
                    name: name.to_string(),
                    index,
                    value: v.to_string(),
                })
            })
        })
        .collect()
}

fn is_empty(c: &InferTensorContents) -> bool {
    c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty()
}

/// At most 64 characters of a client-sent name, for messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::proto::model_infer_request::InferRequestedOutputTensor;

    fn spec() -> InputSpec {
        InputSpec {
            name: "image".into(),
            chw: [1, 2, 2],
            max_batch: 4,
        }
    }

    fn tensor(
        shape: Vec<i64>,
        datatype: &str,
        contents: Option<InferTensorContents>,
    ) -> InferInputTensor {
        InferInputTensor {
            name: "image".into(),
            datatype: datatype.into(),
            shape,
            parameters: HashMap::new(),
            contents,
        }
    }

    fn raw_request(shape: Vec<i64>, raw: &[u8]) -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![tensor(shape, "UINT8", None)],
            raw_input_contents: vec![bytes::Bytes::copy_from_slice(raw)],
            ..Default::default()
        }
    }

    fn typed(values: Vec<u32>) -> InferTensorContents {
        InferTensorContents {
            uint_contents: values,
            ..Default::default()
        }
    }

    fn int(v: i64) -> InferParameter {
        InferParameter {
            parameter_choice: Some(infer_parameter::ParameterChoice::Int64Param(v)),
        }
    }

    fn err(req: ModelInferRequest) -> String {
        decode_grpc(req, &spec())
            .expect_err("should be rejected")
            .to_string()
    }

    #[test]
    fn raw_and_typed_contents_decode_to_the_same_batch() {
        let data = [0u8, 1, 2, 3, 4, 5, 6, 255];
        let mut raw = raw_request(vec![2, 1, 2, 2], &data);
        raw.id = "r1".into();
        raw.parameters.insert("top_k".into(), int(2));
        raw.inputs[0]
            .parameters
            .insert("binary_data_size".into(), int(8));
        raw.outputs.push(InferRequestedOutputTensor {
            name: "probs".into(),
            parameters: HashMap::new(),
        });
        let a = decode_grpc(raw, &spec()).expect("raw");
        assert_eq!(
            a.batch,
            ImageBatch {
                n: 2,
                data: data.to_vec()
            }
        );
        assert_eq!(a.id.as_deref(), Some("r1"));
        assert_eq!(a.k, Some(KValue::Int(2)));
        assert_eq!(a.outputs.as_ref().map(Vec::len), Some(1));
        let t = ModelInferRequest {
            inputs: vec![tensor(
                vec![2, 1, 2, 2],
                "UINT8",
                Some(typed(data.iter().map(|&b| u32::from(b)).collect())),
            )],
            ..Default::default()
        };
        let b = decode_grpc(t, &spec()).expect("typed");
        assert_eq!(b.batch, a.batch);
        assert_eq!((b.id, b.k, b.outputs), (None, None, None));
    }

    #[test]
    fn every_bad_request_is_named() {
        let four = [1u8, 2, 3, 4];
        let cases: Vec<(ModelInferRequest, &str)> = vec![
            (
                raw_request(vec![1, 1, 2, 3], &four),
                "must have shape [N, 1, 2, 2] with 1 <= N <= 4",
            ),
            (raw_request(vec![5, 1, 2, 2], &[0; 20]), "1 <= N <= 4"),
            (raw_request(vec![0, 1, 2, 2], &[]), "1 <= N <= 4"),
            (
                raw_request(vec![1, 1, 2, 2], &[1, 2, 3]),
                "must hold 4 bytes, got 3",
            ),
            (
                {
                    let mut r = raw_request(vec![1, 1, 2, 2], &four);
                    r.raw_input_contents.push(bytes::Bytes::new());
                    r
                },
                "raw_input_contents has 2 entries",
            ),
            (
                {
                    let mut r = raw_request(vec![1, 1, 2, 2], &four);
                    r.inputs[0].contents = Some(typed(vec![1, 2, 3, 4]));
                    r
                },
                "both contents and raw_input_contents",
            ),
            (
                ModelInferRequest {
                    inputs: vec![tensor(
                        vec![1, 1, 2, 2],
                        "UINT8",
                        Some(typed(vec![1, 2, 256, 4])),
                    )],
                    ..Default::default()
                },
                "data[2] = 256 is not a UINT8",
            ),
            (
                ModelInferRequest {
                    inputs: vec![tensor(
                        vec![1, 1, 2, 2],
                        "UINT8",
                        Some(typed(vec![1, 2, 3])),
                    )],
                    ..Default::default()
                },
                "must hold 4 values, got 3",
            ),
            (
                ModelInferRequest {
                    inputs: vec![tensor(
                        vec![1, 1, 2, 2],
                        "UINT8",
                        Some(InferTensorContents {
                            fp32_contents: vec![1.0; 4],
                            ..Default::default()
                        }),
                    )],
                    ..Default::default()
                },
                "not contents.fp32_contents",
            ),
            (
                ModelInferRequest {
                    inputs: vec![tensor(vec![1, 1, 2, 2], "UINT8", None)],
                    ..Default::default()
                },
                "neither contents.uint_contents nor raw_input_contents",
            ),
            (
                ModelInferRequest {
                    inputs: vec![tensor(vec![1, 1, 2, 2], "FP32", None)],
                    raw_input_contents: vec![bytes::Bytes::from_static(&[0; 16])],
                    ..Default::default()
                },
                "must have datatype UINT8, got \"FP32\"",
            ),
            (
                ModelInferRequest::default(),
                "expected exactly one input tensor named \"image\", got 0",
            ),
            (
                {
                    let mut r = raw_request(vec![1, 1, 2, 2], &four);
                    r.inputs[0].name = "pixels".into();
                    r
                },
                "unknown input \"pixels\"",
            ),
            (
                {
                    let mut r = raw_request(vec![1, 1, 2, 2], &four);
                    r.parameters.insert("priority".into(), int(1));
                    r
                },
                "unknown parameter \"priority\" in parameters; this server reads k (alias top_k)",
            ),
            (
                {
                    let mut r = raw_request(vec![1, 1, 2, 2], &four);
                    r.parameters.insert("k".into(), int(1));
                    r.parameters.insert("top_k".into(), int(1));
                    r
                },
                "k and top_k are the same parameter",
            ),
            (
                {
                    let mut r = raw_request(vec![1, 1, 2, 2], &four);
                    r.outputs.push(InferRequestedOutputTensor {
                        name: "probs".into(),
                        parameters: HashMap::from([("classification".into(), int(3))]),
                    });
                    r
                },
                "unknown parameter \"classification\" in outputs[].parameters",
            ),
            (
                {
                    let mut r = raw_request(vec![1, 1, 2, 2], &four);
                    r.inputs[0]
                        .parameters
                        .insert("binary_data_size".into(), int(5));
                    r
                },
                "declares binary_data_size 5 but its raw_input_contents hold 4 bytes",
            ),
            (
                {
                    let mut r = raw_request(vec![1, 1, 2, 2], &four);
                    r.inputs[0].parameters.insert("scale".into(), int(5));
                    r
                },
                "unknown parameter \"scale\" in inputs[].parameters; this server reads binary_data_size",
            ),
        ];
        for (req, want) in cases {
            let e = err(req);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    #[test]
    fn a_k_that_is_not_an_integer_is_kept_for_the_k_check() {
        let mut r = raw_request(vec![1, 1, 2, 2], &[1, 2, 3, 4]);
        r.parameters.insert(
            "k".into(),
            InferParameter {
                parameter_choice: Some(infer_parameter::ParameterChoice::StringParam("3".into())),
            },
        );
        let d = decode_grpc(r, &spec()).expect("decoded");
        assert_eq!(d.k, Some(KValue::Other("string_param \"3\"".into())));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any shape, raw size and typed values: an answer or a named error, never a panic; an accepted batch
        /// always holds exactly N samples.
        #[test]
        fn arbitrary_requests_never_panic(
            shape in proptest::collection::vec(-3i64..20, 0..6),
            raw in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)),
            typed in proptest::option::of(proptest::collection::vec(0u32..300, 0..80)),
            k in proptest::option::of(proptest::prelude::any::<i64>()),
        ) {
            let mut r = ModelInferRequest {
                inputs: vec![tensor(shape, "UINT8", typed.map(typed_contents))],
                raw_input_contents: raw.map(|b| vec![bytes::Bytes::from(b)]).unwrap_or_default(),
                ..Default::default()
            };
            if let Some(k) = k {
                r.parameters.insert("k".into(), int(k));
            }
            if let Ok(d) = decode_grpc(r, &spec()) {
                proptest::prop_assert!(d.batch.n >= 1 && d.batch.n <= 4);
                proptest::prop_assert_eq!(d.batch.data.len(), d.batch.n * 4);
            }
        }

        /// Every prost-decodable byte string is answered without a panic.
        #[test]
        fn arbitrary_messages_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(r) = <ModelInferRequest as prost::Message>::decode(bytes.as_slice()) {
                let _ = decode_grpc(r, &spec());
            }
        }
    }

    fn typed_contents(v: Vec<u32>) -> InferTensorContents {
        typed(v)
    }
}
