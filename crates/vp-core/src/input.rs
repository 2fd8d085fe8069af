//! Input validation: checks an OIP v2 request against the family's input spec (one `UINT8` tensor
//! `[N, C, H, W]`) and the request parameters, with an error message a client can act on.

use crate::manifest::Manifest;
use crate::oip::InferRequest;
use crate::topk::{KError, validate_k};
use serde_json::Value;
use thiserror::Error;

/// What every model of a family takes: one uint8 tensor named `name` of shape `[N, c, h, w]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    /// C, H, W.
    pub chw: [usize; 3],
    /// Largest N accepted in one request.
    pub max_batch: usize,
}

/// A validated batch of images: `n` samples of `c*h*w` bytes each, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBatch {
    pub n: usize,
    pub data: Vec<u8>,
}

/// Why a request was rejected (always the client's fault: a 4xx).
#[derive(Debug, Error, PartialEq)]
pub enum InputError {
    #[error("expected exactly one input tensor named {expected:?}, got {got}")]
    InputCount { expected: String, got: usize },
    #[error("unknown input {got:?}: this model takes one input named {expected:?}")]
    Name { expected: String, got: String },
    #[error("input {name:?} must have datatype UINT8, got {got:?}")]
    Datatype { name: String, got: String },
    #[error(
        "input {name:?} must have shape [N, {c}, {h}, {w}] with 1 <= N <= {max_batch}, got {got:?}"
    )]
    Shape {
        name: String,
        c: usize,
        h: usize,
        w: usize,
        max_batch: usize,
        got: Vec<i64>,
    },
    #[error("input {name:?} has shape {shape:?} so data must hold {expected} values, got {got}")]
    DataLength {
        name: String,
        shape: Vec<i64>,
        expected: usize,
        got: usize,
    },
    #[error("input {name:?}: data[{index}] = {value} is not a UINT8 value (an integer 0..=255)")]
    DataValue {
        name: String,
        index: usize,
        value: String,
    },
    #[error("input {name:?}: data must be an array of numbers")]
    DataNotArray { name: String },
    #[error("parameters.k must be an integer, got {0}")]
    KNotInteger(String),
    #[error(transparent)]
    K(#[from] KError),
}

impl InputSpec {
    /// The spec of a family's manifest.
    pub fn from_manifest(m: &Manifest, max_batch: usize) -> Self {
        let s = &m.input.shape;
        Self {
            name: m.input.name.clone(),
            chw: [s[0], s[1], s[2]],
            max_batch,
        }
    }

    /// Bytes per sample.
    pub fn sample_len(&self) -> usize {
        self.chw.iter().product()
    }

    /// Checks the request's single input tensor and returns its bytes.
    pub fn validate(&self, req: &InferRequest) -> Result<ImageBatch, InputError> {
        let [c, h, w] = self.chw;
        if req.inputs.len() != 1 {
            return Err(InputError::InputCount {
                expected: self.name.clone(),
                got: req.inputs.len(),
            });
        }
        let t = &req.inputs[0];
        if t.name != self.name {
            return Err(InputError::Name {
                expected: self.name.clone(),
                got: t.name.clone(),
            });
        }
        if t.datatype != "UINT8" {
            return Err(InputError::Datatype {
                name: t.name.clone(),
                got: t.datatype.clone(),
            });
        }
        let shape_ok = t.shape.len() == 4
            && t.shape[0] >= 1
            && t.shape[0] as u64 <= self.max_batch as u64
            && t.shape[1..] == [c as i64, h as i64, w as i64];
        if !shape_ok {
            return Err(InputError::Shape {
                name: t.name.clone(),
                c,
                h,
                w,
                max_batch: self.max_batch,
                got: t.shape.clone(),
            });
        }
        let n = t.shape[0] as usize;
        let expected = n * self.sample_len();
        let mut data = Vec::with_capacity(expected);
        let mut count = 0;
        flatten_u8(&t.data, &t.name, &mut data, &mut count, expected)?;
        if count != expected {
            return Err(InputError::DataLength {
                name: t.name.clone(),
                shape: t.shape.clone(),
                expected,
                got: count,
            });
        }
        Ok(ImageBatch { n, data })
    }
}

/// Appends the (possibly nested) array of integers 0..=255 in `v` to `out` (at most `limit` of them, so an
/// oversized array cannot grow memory further) and counts all values in `count`.
fn flatten_u8(
    v: &Value,
    name: &str,
    out: &mut Vec<u8>,
    count: &mut usize,
    limit: usize,
) -> Result<(), InputError> {
    let Value::Array(items) = v else {
        return Err(InputError::DataNotArray {
            name: name.to_string(),
        });
    };
    for item in items {
        let bad = |value: String| InputError::DataValue {
            name: name.to_string(),
            index: *count,
            value,
        };
        match item {
            Value::Array(_) => flatten_u8(item, name, out, count, limit)?,
            Value::Number(num) => match num.as_u64() {
                Some(x) if x <= 255 => {
                    if out.len() < limit {
                        out.push(x as u8);
                    }
                    *count += 1;
                }
                _ => return Err(bad(num.to_string())),
            },
            other => return Err(bad(other.to_string())),
        }
    }
    Ok(())
}

/// The `k` request parameter if present, validated for `classes` classes; `default` otherwise.
pub fn k_from_request(
    req: &InferRequest,
    classes: usize,
    default: usize,
) -> Result<usize, InputError> {
    match req.parameters.as_ref().and_then(|p| p.get("k")) {
        None => Ok(default),
        Some(v) => match v.as_i64() {
            Some(k) => Ok(validate_k(k, classes)?),
            None => Err(InputError::KNotInteger(v.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> InputSpec {
        InputSpec {
            name: "image".into(),
            chw: [1, 2, 2],
            max_batch: 4,
        }
    }

    fn req(v: Value) -> InferRequest {
        serde_json::from_value(v).expect("request")
    }

    fn one(shape: Value, datatype: &str, data: Value) -> InferRequest {
        req(
            json!({"inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": data}]}),
        )
    }

    #[test]
    fn accepts_flat_and_nested_data() {
        let b = spec()
            .validate(&one(json!([1, 1, 2, 2]), "UINT8", json!([0, 1, 2, 255])))
            .expect("ok");
        assert_eq!(
            b,
            ImageBatch {
                n: 1,
                data: vec![0, 1, 2, 255]
            }
        );
        let b = spec()
            .validate(&one(
                json!([2, 1, 2, 2]),
                "UINT8",
                json!([[[[1, 2], [3, 4]]], [[[5, 6], [7, 8]]]]),
            ))
            .expect("ok");
        assert_eq!(b.n, 2);
        assert_eq!(b.data, (1..=8).collect::<Vec<u8>>());
    }

    #[test]
    fn rejects_each_kind_of_bad_input_with_a_clear_message() {
        let s = spec();
        let cases: Vec<(InferRequest, &str)> = vec![
            (req(json!({"inputs": []})), "exactly one input"),
            (
                req(
                    json!({"inputs": [{"name": "x", "shape": [1, 1, 2, 2], "datatype": "UINT8", "data": [0, 0, 0, 0]}]}),
                ),
                "unknown input \"x\"",
            ),
            (
                one(json!([1, 1, 2, 2]), "FP32", json!([0.0, 0.0, 0.0, 0.0])),
                "datatype UINT8",
            ),
            (
                one(json!([1, 1, 3, 2]), "UINT8", json!([0, 0, 0, 0, 0, 0])),
                "shape [N, 1, 2, 2]",
            ),
            (
                one(json!([5, 1, 2, 2]), "UINT8", json!(vec![0; 20])),
                "1 <= N <= 4",
            ),
            (one(json!([0, 1, 2, 2]), "UINT8", json!([])), "1 <= N <= 4"),
            (
                one(json!([1, 1, 2, 2]), "UINT8", json!([0, 0, 0])),
                "must hold 4 values, got 3",
            ),
            (
                one(json!([1, 1, 2, 2]), "UINT8", json!(vec![0; 9])),
                "must hold 4 values, got 9",
            ),
            (
                one(json!([1, 1, 2, 2]), "UINT8", json!([0, 256, 0, 0])),
                "data[1] = 256",
            ),
            (
                one(json!([1, 1, 2, 2]), "UINT8", json!([0, -1, 0, 0])),
                "data[1] = -1",
            ),
            (
                one(json!([1, 1, 2, 2]), "UINT8", json!([0, 1.5, 0, 0])),
                "data[1] = 1.5",
            ),
            (
                one(json!([1, 1, 2, 2]), "UINT8", json!([0, "a", 0, 0])),
                "data[1] = \"a\"",
            ),
            (
                one(json!([1, 1, 2, 2]), "UINT8", json!("AAAA")),
                "array of numbers",
            ),
        ];
        for (r, want) in cases {
            let e = s.validate(&r).expect_err(want).to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    #[test]
    fn k_parameter() {
        let mut r = one(json!([1, 1, 2, 2]), "UINT8", json!([0, 0, 0, 0]));
        assert_eq!(k_from_request(&r, 10, 3), Ok(3));
        r.parameters = Some(serde_json::from_value(json!({"k": 5})).expect("map"));
        assert_eq!(k_from_request(&r, 10, 3), Ok(5));
        r.parameters = Some(serde_json::from_value(json!({"k": 6})).expect("map"));
        assert!(
            k_from_request(&r, 10, 3)
                .expect_err("should fail")
                .to_string()
                .contains("between 1 and 5")
        );
        r.parameters = Some(serde_json::from_value(json!({"k": "two"})).expect("map"));
        assert!(
            k_from_request(&r, 10, 3)
                .expect_err("should fail")
                .to_string()
                .contains("integer")
        );
    }
}
