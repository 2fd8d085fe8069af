//! Typed, streaming decoder for OIP v2 infer request bodies. The body is read straight into the family's input
//! bytes (one byte per value) instead of a generic JSON tree (about 16 bytes of memory per byte sent); values
//! beyond the declared shape, or beyond the largest batch when the shape comes later, are counted but never
//! stored, and a tensor whose name, datatype or shape is already known to be wrong is skipped unread. The
//! result is then checked against the spec with the same messages as before ([`InputError`]).
//!
//! Triton's binary tensor extension is read here too: with `Inference-Header-Content-Length: H` the first H
//! bytes are the JSON header and the rest is the raw tensor, whose size the input declares in
//! `parameters.binary_data_size`. The same checks apply to both encodings (shape, batch limit, exact size), and
//! the binary part is copied once, only after its declared size matched the shape.
//!
//! Request `parameters` are read strictly: `k` (alias `top_k`) and `binary_data_output`; any other name is a
//! 400 naming it, never silently ignored. So are an input's (`binary_data_size`) and a requested output's
//! (`binary_data`).

use crate::input::{ImageBatch, InputError, InputSpec};
use crate::params::{OutputsSeed, Params, ParamsSeed, TensorParamsSeed};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use thiserror::Error;

/// A decoded and validated infer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRequest {
    pub id: Option<String>,
    /// `parameters.k` (or its alias `top_k`) as sent, if any.
    pub k: Option<KValue>,
    pub batch: ImageBatch,
    /// `parameters.binary_data_output`: outputs not named in `outputs` are sent binary.
    pub binary_output: bool,
    /// `outputs` as sent: the outputs wanted, in order; `None`: all of them.
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One entry of a request's `outputs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    /// `parameters.binary_data` of this output, if given.
    pub binary: Option<bool>,
}

/// The `k` request parameter as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KValue {
    Int(i64),
    /// Anything that is not an integer, as a short description for the error message.
    Other(String),
}

/// Why a request body was rejected (always a 400).
#[derive(Debug, Clone, Error, PartialEq)]
pub enum RequestError {
    #[error("request body is empty; expected a JSON object")]
    Empty,
    #[error("malformed request JSON: {0}")]
    Json(String),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("unknown parameter {name:?} in {place}; this server reads {known}")]
    UnknownParameter {
        place: &'static str,
        name: String,
        known: &'static str,
    },
    #[error("{place}.{name} must be {expected}, got {got}")]
    ParameterType {
        place: &'static str,
        name: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("unknown output {got:?}: this model's outputs are {known}")]
    UnknownOutput { got: String, known: String },
    #[error("output {0:?} is requested twice")]
    OutputTwice(String),
    #[error("parameters k and top_k are the same parameter; give one of them")]
    KTwice,
    #[error("binary tensor data: {0}")]
    Binary(String),
    #[error("Inference-Header-Content-Length is {header} but the body has only {body} bytes")]
    HeaderLength { header: usize, body: usize },
}

/// Request parameters this server reads.
pub(crate) const REQUEST_PARAMS: &str = "k (alias top_k) and binary_data_output";

/// Most shape dimensions kept; longer shapes are reported with their length only.
const MAX_DIMS: usize = 8;

/// Decodes a JSON-only `body` against `spec`.
pub fn decode_request(body: &[u8], spec: &InputSpec) -> Result<DecodedRequest, RequestError> {
    decode_infer(body, None, spec)
}

/// Decodes `body` against `spec`; `header_len` is the `Inference-Header-Content-Length` header if the request
/// had one (the binary tensor extension): the JSON is then `body[..header_len]` and the rest is binary data.
pub fn decode_infer(
    body: &[u8],
    header_len: Option<usize>,
    spec: &InputSpec,
) -> Result<DecodedRequest, RequestError> {
    let (json, binary) = match header_len {
        None => (body, None),
        Some(h) if h > body.len() => {
            return Err(RequestError::HeaderLength {
                header: h,
                body: body.len(),
            });
        }
        Some(h) => (&body[..h], Some(&body[h..])),
    };
    if json.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::Empty);
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut raw = RequestSeed { spec }
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|e| RequestError::Json(e.to_string()))?;
    if let Some(e) = raw.params.error.take() {
        return Err(e);
    }
    let k = match (raw.params.k.take(), raw.params.top_k.take()) {
        (Some(_), Some(_)) => return Err(RequestError::KTwice),
        (k, top_k) => k.or(top_k),
    };
    let batch = raw.check(spec, binary)?;
    Ok(DecodedRequest {
        id: raw.id,
        k,
        batch,
        binary_output: raw.params.binary_output,
        outputs: raw.outputs,
    })
}

/// What the decoder saw, before the spec checks.
struct RawRequest {
    id: Option<String>,
    params: Params,
    inputs: usize,
    first: Option<RawTensor>,
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Default)]
struct RawTensor {
    name: Option<String>,
    shape: Option<Vec<i64>>,
    datatype: Option<String>,
    data: Option<Data>,
    /// `parameters.binary_data_size`, or why it was unusable.
    binary_size: Option<Result<u64, RequestError>>,
}

/// Tensor values as read: the bytes kept, how many values there were in all, the first bad one.
#[derive(Default)]
struct Data {
    out: Vec<u8>,
    cap: usize,
    count: usize,
    bad: Option<(usize, String)>,
    not_array: bool,
    skipped: bool,
}

impl RawRequest {
    fn check(&self, spec: &InputSpec, binary: Option<&[u8]>) -> Result<ImageBatch, RequestError> {
        let [c, h, w] = spec.chw;
        let t = match (&self.first, self.inputs) {
            (Some(t), 1) => t,
            _ => {
                return Err(InputError::InputCount {
                    expected: spec.name.clone(),
                    got: self.inputs,
                }
                .into());
            }
        };
        let name = t.name.clone().unwrap_or_default();
        if name != spec.name {
            return Err(InputError::Name {
                expected: spec.name.clone(),
                got: name,
            }
            .into());
        }
        let datatype = t.datatype.clone().unwrap_or_default();
        if datatype != "UINT8" {
            return Err(InputError::Datatype {
                name,
                got: datatype,
            }
            .into());
        }
        let shape = t.shape.clone().unwrap_or_default();
        let n = batch_of(&shape, spec).ok_or_else(|| InputError::Shape {
            name: name.clone(),
            c,
            h,
            w,
            max_batch: spec.max_batch,
            got: shape.clone(),
        })?;
        let expected = n * spec.sample_len();
        let extra = binary.map_or(0, <[u8]>::len);
        let data = match (&t.data, t.binary_size.clone()) {
            (_, Some(Err(e))) => return Err(e),
            (Some(_), Some(_)) => {
                return Err(RequestError::Binary(format!(
                    "input {name:?} has both data and parameters.binary_data_size; give one"
                )));
            }
            (None, Some(Ok(size))) => {
                let binary = binary.ok_or_else(|| {
                    RequestError::Binary(format!(
                        "input {name:?} declares parameters.binary_data_size but the request has no \
                         Inference-Header-Content-Length header"
                    ))
                })?;
                if size != expected as u64 {
                    return Err(RequestError::Binary(format!(
                        "input {name:?} has shape {shape:?} of UINT8 (1 byte each), so binary_data_size \
                         must be {expected}, got {size}"
                    )));
                }
                if binary.len() as u64 != size {
                    return Err(RequestError::Binary(format!(
                        "the body holds {} bytes after the JSON header, but the inputs declare {size}",
                        binary.len()
                    )));
                }
                return Ok(ImageBatch {
                    n,
                    data: binary.to_vec(),
                });
            }
            (Some(data), None) => data,
            (None, None) => {
                return Err(RequestError::Json(format!(
                    "input {name:?} has neither data nor parameters.binary_data_size"
                )));
            }
        };
        if extra > 0 {
            return Err(RequestError::Binary(format!(
                "the body holds {extra} bytes after the JSON header, but no input declares \
                 parameters.binary_data_size"
            )));
        }
        if data.not_array {
            return Err(InputError::DataNotArray { name }.into());
        }
        if let Some((index, value)) = &data.bad {
            return Err(InputError::DataValue {
                name,
                index: *index,
                value: value.clone(),
            }
            .into());
        }
        if data.count != expected || data.skipped {
            return Err(InputError::DataLength {
                name,
                shape,
                expected,
                got: data.count,
            }
            .into());
        }
        Ok(ImageBatch {
            n,
            data: data.out.clone(),
        })
    }
}

/// N if `shape` is `[N, C, H, W]` of the spec with `1 <= N <= max_batch`.
pub fn batch_of(shape: &[i64], spec: &InputSpec) -> Option<usize> {
    let [c, h, w] = spec.chw;
    let ok = shape.len() == 4
        && shape[0] >= 1
        && shape[0] as u64 <= spec.max_batch as u64
        && shape[1..] == [c as i64, h as i64, w as i64];
    ok.then(|| shape[0] as usize)
}

struct RequestSeed<'a> {
    spec: &'a InputSpec,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = RawRequest;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawRequest, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = RawRequest;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an OIP infer request object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRequest, A::Error> {
        let mut id = None;
        let mut params = Params::default();
        let mut inputs = None;
        let mut outputs = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "id" => id = map.next_value::<Option<String>>()?,
                "inputs" => inputs = Some(map.next_value_seed(InputsSeed { spec: self.spec })?),
                "parameters" => params = map.next_value_seed(ParamsSeed)?,
                "outputs" => outputs = map.next_value_seed(OutputsSeed)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (count, first) = inputs.ok_or_else(|| de::Error::missing_field("inputs"))?;
        let (outputs, output_error) = match outputs {
            Some((list, error)) => (Some(list), error),
            None => (None, None),
        };
        if params.error.is_none() {
            params.error = output_error;
        }
        Ok(RawRequest {
            id,
            params,
            inputs: count,
            first,
            outputs,
        })
    }
}

struct InputsSeed<'a> {
    spec: &'a InputSpec,
}

impl<'de> DeserializeSeed<'de> for InputsSeed<'_> {
    type Value = (usize, Option<RawTensor>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_> {
    type Value = (usize, Option<RawTensor>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of input tensors")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq.next_element_seed(TensorSeed { spec: self.spec })?;
        let mut count = usize::from(first.is_some());
        // Only one input is valid; further tensors are counted for the message, not stored.
        while seq.next_element::<IgnoredAny>()?.is_some() {
            count += 1;
        }
        Ok((count, first))
    }
}

struct TensorSeed<'a> {
    spec: &'a InputSpec,
}

impl<'de> DeserializeSeed<'de> for TensorSeed<'_> {
    type Value = RawTensor;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawTensor, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TensorSeed<'_> {
    type Value = RawTensor;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an input tensor object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTensor, A::Error> {
        let spec = self.spec;
        let mut t = RawTensor::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "name" => t.name = Some(map.next_value()?),
                "datatype" => t.datatype = Some(map.next_value()?),
                "shape" => t.shape = Some(map.next_value_seed(ShapeSeed)?),
                "parameters" => t.binary_size = map.next_value_seed(TensorParamsSeed)?,
                "data" => {
                    // Skip the values of a tensor that is already known to be rejected.
                    let doomed = t.name.as_ref().is_some_and(|n| *n != spec.name)
                        || t.datatype.as_ref().is_some_and(|d| d != "UINT8")
                        || t.shape
                            .as_ref()
                            .is_some_and(|s| batch_of(s, spec).is_none());
                    if doomed {
                        map.next_value::<IgnoredAny>()?;
                        t.data = Some(Data::default());
                        continue;
                    }
                    let cap = match t.shape.as_ref().and_then(|s| batch_of(s, spec)) {
                        Some(n) => n * spec.sample_len(),
                        None => spec.max_batch.saturating_mul(spec.sample_len()),
                    };
                    let mut data = Data {
                        cap,
                        ..Data::default()
                    };
                    map.next_value_seed(Values {
                        data: &mut data,
                        top: true,
                    })?;
                    t.data = Some(data);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        for (field, present) in [
            ("name", t.name.is_some()),
            ("shape", t.shape.is_some()),
            ("datatype", t.datatype.is_some()),
        ] {
            if !present {
                return Err(de::Error::missing_field(field));
            }
        }
        Ok(t)
    }
}

/// A shape: integers, at most [`MAX_DIMS`] kept (a longer one is invalid anyway).
struct ShapeSeed;

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = Vec<i64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<i64>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed {
    type Value = Vec<i64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of integers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<i64>, A::Error> {
        let mut dims = Vec::new();
        while let Some(d) = seq.next_element::<i64>()? {
            if dims.len() < MAX_DIMS {
                dims.push(d);
            } else {
                // Keep a marker so the shape stays invalid and the message shows it was longer.
                dims[MAX_DIMS - 1] = -1;
            }
        }
        Ok(dims)
    }
}

/// One value (or nested array of values) of a tensor's `data`.
struct Values<'a> {
    data: &'a mut Data,
    top: bool,
}

impl Values<'_> {
    fn value(self, v: Option<u8>, text: impl FnOnce() -> String) {
        let d = self.data;
        if self.top {
            d.not_array = true;
            return;
        }
        match v {
            Some(b) => {
                if d.out.len() < d.cap {
                    d.out.push(b);
                } else {
                    d.skipped = true;
                }
            }
            None => {
                if d.bad.is_none() {
                    d.bad = Some((d.count, text()));
                }
            }
        }
        d.count += 1;
    }
}

impl<'de> DeserializeSeed<'de> for Values<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

pub(crate) fn float_text(x: f64) -> String {
    serde_json::Number::from_f64(x).map_or_else(|| x.to_string(), |n| n.to_string())
}

impl<'de> Visitor<'de> for Values<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of integers 0..=255")
    }
    fn visit_u64<E: de::Error>(self, x: u64) -> Result<(), E> {
        self.value(u8::try_from(x).ok(), || x.to_string());
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, x: i64) -> Result<(), E> {
        self.value(u8::try_from(x).ok(), || x.to_string());
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<(), E> {
        self.value(None, || float_text(x));
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, x: bool) -> Result<(), E> {
        self.value(None, || x.to_string());
        Ok(())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.value(None, || {
            format!("{:?}", s.chars().take(40).collect::<String>())
        });
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.value(None, || "null".to_string());
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.value(None, || "an object".to_string());
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let d = self.data;
        while seq
            .next_element_seed(Values {
                data: &mut *d,
                top: false,
            })?
            .is_some()
        {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InputSpec {
        InputSpec {
            name: "image".into(),
            chw: [1, 2, 2],
            max_batch: 4,
        }
    }

    /// A binary-extension body: the JSON header, then `bin`; returns the body and the header length.
    fn binary(shape: &str, size: &str, bin: &[u8]) -> (Vec<u8>, usize) {
        let header = format!(
            r#"{{"inputs":[{{"name":"image","shape":{shape},"datatype":"UINT8","parameters":{{"binary_data_size":{size}}}}}]}}"#
        );
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(bin);
        (body, header.len())
    }

    #[test]
    fn binary_tensors_decode_to_the_same_batch_as_json() {
        let data: Vec<u8> = (0..8).map(|i| i * 30).collect();
        let (body, h) = binary("[2,1,2,2]", "8", &data);
        let b = decode_infer(&body, Some(h), &spec()).expect("binary");
        let json = format!(
            r#"{{"inputs":[{{"name":"image","shape":[2,1,2,2],"datatype":"UINT8","data":{data:?}}}]}}"#
        );
        let j = decode_request(json.as_bytes(), &spec()).expect("json");
        assert_eq!(b, j);
        // A JSON request may carry the header too (an empty binary part).
        let j2 = decode_infer(json.as_bytes(), Some(json.len()), &spec()).expect("json+header");
        assert_eq!(j2, j);
    }

    #[test]
    fn binary_tensors_are_checked_like_json_ones() {
        let four = [1u8, 2, 3, 4];
        let cases: Vec<(Vec<u8>, Option<usize>, &str)> = vec![
            {
                let (b, h) = binary("[1,1,2,2]", "5", &[0; 5]);
                (b, Some(h), "binary_data_size must be 4, got 5")
            },
            {
                let (b, h) = binary("[1,1,2,2]", "4", &four[..3]);
                (b, Some(h), "holds 3 bytes after the JSON header, but the inputs declare 4")
            },
            {
                let (b, h) = binary("[1,1,2,2]", "4", &[0; 6]);
                (b, Some(h), "holds 6 bytes")
            },
            {
                let (b, h) = binary("[5,1,2,2]", "20", &[0; 20]);
                (b, Some(h), "1 <= N <= 4")
            },
            {
                let (b, h) = binary("[1,1,2,2]", "-4", &four);
                (b, Some(h), "binary_data_size must be a byte count")
            },
            {
                let (b, h) = binary("[1,1,2,2]", "\"4\"", &four);
                (b, Some(h), "got \"4\"")
            },
            {
                let (b, _) = binary("[1,1,2,2]", "4", &four);
                (b, None, "malformed request JSON")
            },
            {
                let (b, _) = binary("[1,1,2,2]", "4", &four);
                let len = b.len();
                (b, Some(len + 1), "Inference-Header-Content-Length is")
            },
            {
                let (b, h) = binary("[1,1,2,2]", "4", &four);
                (b, Some(h - 1), "malformed request JSON")
            },
            {
                let json = br#"{"inputs":[{"name":"image","shape":[1,1,2,2],"datatype":"UINT8","data":[1,2,3,4]}]}"#;
                let body = json.iter().copied().chain([9, 9]).collect();
                (body, Some(json.len()), "no input declares")
            },
            (
                br#"{"inputs":[{"name":"image","shape":[1,1,2,2],"datatype":"UINT8","data":[1,2,3,4],"parameters":{"binary_data_size":4}}]}"#.to_vec(),
                None,
                "both data and parameters.binary_data_size",
            ),
            (
                br#"{"inputs":[{"name":"image","shape":[1,1,2,2],"datatype":"UINT8","parameters":{"binary_data_size":4}}]}"#.to_vec(),
                None,
                "no Inference-Header-Content-Length header",
            ),
            (
                br#"{"inputs":[{"name":"image","shape":[1,1,2,2],"datatype":"UINT8"}]}"#.to_vec(),
                None,
                "neither data nor parameters.binary_data_size",
            ),
            (
                br#"{"inputs":[{"name":"image","shape":[1,1,2,2],"datatype":"UINT8","data":[1,2,3,4],"parameters":{"shared_memory_region":"r"}}]}"#.to_vec(),
                None,
                "unknown parameter \"shared_memory_region\" in inputs[0].parameters",
            ),
        ];
        for (body, h, want) in cases {
            let e = decode_infer(&body, h, &spec()).expect_err(want).to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }
}
