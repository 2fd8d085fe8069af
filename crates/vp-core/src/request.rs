//! Typed, streaming decoder for OIP v2 infer request bodies. The body is read straight into the family's input
//! bytes (one byte per value) instead of a generic JSON tree (about 16 bytes of memory per byte sent); values
//! beyond the declared shape, or beyond the largest batch when the shape comes later, are counted but never
//! stored, and a tensor whose name, datatype or shape is already known to be wrong is skipped unread. The
//! result is then checked against the spec with the same messages as before ([`InputError`]).

use crate::input::{ImageBatch, InputError, InputSpec};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use thiserror::Error;

/// A decoded and validated infer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRequest {
    pub id: Option<String>,
    /// `parameters.k` as sent, if any.
    pub k: Option<KValue>,
    pub batch: ImageBatch,
}

/// The `k` request parameter as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KValue {
    Int(i64),
    /// Anything that is not an integer, as a short description for the error message.
    Other(String),
}

/// Why a request body was rejected (always a 400).
#[derive(Debug, Error, PartialEq)]
pub enum RequestError {
    #[error("request body is empty; expected a JSON object")]
    Empty,
    #[error("malformed request JSON: {0}")]
    Json(String),
    #[error(transparent)]
    Input(#[from] InputError),
}

/// Most shape dimensions kept; longer shapes are reported with their length only.
const MAX_DIMS: usize = 8;

/// Decodes `body` against `spec`.
pub fn decode_request(body: &[u8], spec: &InputSpec) -> Result<DecodedRequest, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::Empty);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw = RequestSeed { spec }
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|e| RequestError::Json(e.to_string()))?;
    let batch = raw.check(spec)?;
    Ok(DecodedRequest {
        id: raw.id,
        k: raw.k,
        batch,
    })
}

/// What the decoder saw, before the spec checks.
struct RawRequest {
    id: Option<String>,
    k: Option<KValue>,
    inputs: usize,
    first: Option<RawTensor>,
}

#[derive(Default)]
struct RawTensor {
    name: Option<String>,
    shape: Option<Vec<i64>>,
    datatype: Option<String>,
    data: Option<Data>,
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
    fn check(&self, spec: &InputSpec) -> Result<ImageBatch, InputError> {
        let [c, h, w] = spec.chw;
        let t = match (&self.first, self.inputs) {
            (Some(t), 1) => t,
            _ => {
                return Err(InputError::InputCount {
                    expected: spec.name.clone(),
                    got: self.inputs,
                });
            }
        };
        let name = t.name.clone().unwrap_or_default();
        if name != spec.name {
            return Err(InputError::Name {
                expected: spec.name.clone(),
                got: name,
            });
        }
        let datatype = t.datatype.clone().unwrap_or_default();
        if datatype != "UINT8" {
            return Err(InputError::Datatype {
                name,
                got: datatype,
            });
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
        let data = t
            .data
            .as_ref()
            .ok_or_else(|| InputError::DataNotArray { name: name.clone() })?;
        if data.not_array {
            return Err(InputError::DataNotArray { name });
        }
        if let Some((index, value)) = &data.bad {
            return Err(InputError::DataValue {
                name,
                index: *index,
                value: value.clone(),
            });
        }
        let expected = n * spec.sample_len();
        if data.count != expected || data.skipped {
            return Err(InputError::DataLength {
                name,
                shape,
                expected,
                got: data.count,
            });
        }
        Ok(ImageBatch {
            n,
            data: data.out.clone(),
        })
    }
}

/// N if `shape` is `[N, C, H, W]` of the spec with `1 <= N <= max_batch`.
fn batch_of(shape: &[i64], spec: &InputSpec) -> Option<usize> {
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
        let mut k = None;
        let mut inputs = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "id" => id = map.next_value::<Option<String>>()?,
                "inputs" => inputs = Some(map.next_value_seed(InputsSeed { spec: self.spec })?),
                "parameters" => k = map.next_value_seed(ParamsSeed)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (count, first) = inputs.ok_or_else(|| de::Error::missing_field("inputs"))?;
        Ok(RawRequest {
            id,
            k,
            inputs: count,
            first,
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
            ("data", t.data.is_some()),
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

fn float_text(x: f64) -> String {
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

/// `parameters`: only `k` is read; other keys are skipped unread.
struct ParamsSeed;

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = Option<KValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<KValue>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed {
    type Value = Option<KValue>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameters object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<KValue>, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<KValue>, A::Error> {
        let mut k = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "k" {
                k = Some(map.next_value_seed(KSeed)?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(k)
    }
}

struct KSeed;

impl<'de> DeserializeSeed<'de> for KSeed {
    type Value = KValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KValue, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KSeed {
    type Value = KValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer k")
    }
    fn visit_u64<E: de::Error>(self, x: u64) -> Result<KValue, E> {
        Ok(i64::try_from(x).map_or_else(|_| KValue::Other(x.to_string()), KValue::Int))
    }
    fn visit_i64<E: de::Error>(self, x: i64) -> Result<KValue, E> {
        Ok(KValue::Int(x))
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<KValue, E> {
        Ok(KValue::Other(float_text(x)))
    }
    fn visit_bool<E: de::Error>(self, x: bool) -> Result<KValue, E> {
        Ok(KValue::Other(x.to_string()))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<KValue, E> {
        Ok(KValue::Other(format!(
            "{:?}",
            s.chars().take(40).collect::<String>()
        )))
    }
    fn visit_unit<E: de::Error>(self) -> Result<KValue, E> {
        Ok(KValue::Other("null".into()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(KValue::Other("an array".into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(KValue::Other("an object".into()))
    }
}
