//! Input validation: the family's input spec (one `UINT8` tensor `[N, C, H, W]`), the errors a request is
//! rejected with (each a message a client can act on), and the `k` parameter. The request body itself is
//! decoded against the spec by [`crate::request`].

use crate::manifest::Manifest;
use crate::request::KValue;
use crate::topk::{KError, validate_k};
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
#[derive(Debug, Clone, Error, PartialEq)]
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
}

/// The `k` request parameter if present, validated for `classes` classes; `default` otherwise.
pub fn k_from_request(
    k: Option<&KValue>,
    classes: usize,
    default: usize,
) -> Result<usize, InputError> {
    match k {
        None => Ok(default),
        Some(KValue::Int(k)) => Ok(validate_k(*k, classes)?),
        Some(KValue::Other(v)) => Err(InputError::KNotInteger(v.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{RequestError, decode_request};
    use serde_json::{Value, json};

    fn spec() -> InputSpec {
        InputSpec {
            name: "image".into(),
            chw: [1, 2, 2],
            max_batch: 4,
        }
    }

    fn decode(v: Value) -> Result<ImageBatch, RequestError> {
        let body = serde_json::to_vec(&v).expect("json");
        decode_request(&body, &spec()).map(|r| r.batch)
    }

    fn one(shape: Value, datatype: &str, data: Value) -> Value {
        json!({"inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": data}]})
    }

    #[test]
    fn accepts_flat_and_nested_data() {
        let b = decode(one(json!([1, 1, 2, 2]), "UINT8", json!([0, 1, 2, 255]))).expect("ok");
        assert_eq!(
            b,
            ImageBatch {
                n: 1,
                data: vec![0, 1, 2, 255]
            }
        );
        let b = decode(one(
            json!([2, 1, 2, 2]),
            "UINT8",
            json!([[[[1, 2], [3, 4]]], [[[5, 6], [7, 8]]]]),
        ))
        .expect("ok");
        assert_eq!(b.n, 2);
        assert_eq!(b.data, (1..=8).collect::<Vec<u8>>());
    }

    #[test]
    fn shape_before_or_after_data_gives_the_same_answer() {
        let early = br#"{"inputs":[{"name":"image","shape":[1,1,2,2],"datatype":"UINT8","data":[1,2,3,4]}]}"#;
        let late = br#"{"inputs":[{"data":[1,2,3,4],"datatype":"UINT8","shape":[1,1,2,2],"name":"image"}]}"#;
        let a = decode_request(early, &spec()).expect("early");
        assert_eq!(a, decode_request(late, &spec()).expect("late"));
        let long_early = br#"{"inputs":[{"name":"image","shape":[1,1,2,2],"datatype":"UINT8","data":[1,2,3,4,5]}]}"#;
        let long_late = br#"{"inputs":[{"data":[1,2,3,4,5],"name":"image","shape":[1,1,2,2],"datatype":"UINT8"}]}"#;
        for body in [&long_early[..], &long_late[..]] {
            let e = decode_request(body, &spec())
                .expect_err("too long")
                .to_string();
            assert!(e.contains("must hold 4 values, got 5"), "{e}");
        }
    }

    #[test]
    fn rejects_each_kind_of_bad_input_with_a_clear_message() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"inputs": []}), "exactly one input"),
            (
                json!({"inputs": [{"name": "x", "shape": [1, 1, 2, 2], "datatype": "UINT8", "data": [0, 0, 0, 0]}]}),
                "unknown input \"x\"",
            ),
            (
                json!({"inputs": [
                    {"name": "image", "shape": [1, 1, 2, 2], "datatype": "UINT8", "data": [0, 0, 0, 0]},
                    {"name": "image", "shape": [1, 1, 2, 2], "datatype": "UINT8", "data": [0, 0, 0, 0]}]}),
                "got 2",
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
                one(json!([1, 1, 2, 2]), "UINT8", json!([0, null, {}, 0])),
                "data[1] = null",
            ),
            (
                one(json!([1, 1, 2, 2]), "UINT8", json!("AAAA")),
                "array of numbers",
            ),
            (json!({"id": "x"}), "missing field `inputs`"),
            (
                json!({"inputs": [{"name": "image"}]}),
                "missing field `shape`",
            ),
            (json!([1, 2]), "malformed request JSON"),
        ];
        for (r, want) in cases {
            let e = decode(r).expect_err(want).to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        for body in [&b""[..], b"  \n"] {
            assert_eq!(decode_request(body, &spec()), Err(RequestError::Empty));
        }
        let e = decode_request(b"{\"inputs\": [] } x", &spec()).expect_err("trailing");
        assert!(matches!(e, RequestError::Json(_)), "{e:?}");
    }

    #[test]
    fn k_parameter() {
        let k = |v: Value| {
            let mut r = one(json!([1, 1, 2, 2]), "UINT8", json!([0, 0, 0, 0]));
            r["parameters"] = v;
            let body = serde_json::to_vec(&r).expect("json");
            let d = decode_request(&body, &spec()).map_err(|e| e.to_string())?;
            k_from_request(d.k.as_ref(), 10, 3).map_err(|e| e.to_string())
        };
        assert_eq!(k(Value::Null), Ok(3));
        assert_eq!(k(json!({})), Ok(3));
        assert_eq!(k(json!({"k": 5})), Ok(5));
        assert_eq!(k(json!({"top_k": 4})), Ok(4));
        for (v, want) in [
            (json!({"k": 6}), "between 1 and 5"),
            (json!({"top_k": 6}), "between 1 and 5"),
            (json!({"k": -1}), "between 1 and 5"),
            (json!({"k": "two"}), "integer"),
            (json!({"k": 2.5}), "integer, got 2.5"),
            (json!({"k": [2]}), "integer, got an array"),
            (json!({"k": true}), "integer, got true"),
            (json!({"k": u64::MAX}), "integer"),
            (json!({"k": 2, "top_k": 2}), "give one of them"),
            (
                json!({"other": [1, 2, 3]}),
                "unknown parameter \"other\" in parameters; this server reads k (alias top_k)",
            ),
            (
                json!({"binary_data_output": "yes"}),
                "parameters.binary_data_output must be true or false, got \"yes\"",
            ),
        ] {
            let e = k(v).expect_err(want);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }
}
