//! The `parameters` objects of an OIP infer request (the request's, an input's, a requested output's) and the
//! request's `outputs` list, read strictly: every name this server does not read is reported (a 400 naming it)
//! instead of being skipped, so a client never believes a setting took effect when it did not. Values are
//! read without building a JSON tree; the first problem found is kept and reported after decoding.

use crate::request::{KValue, REQUEST_PARAMS, RequestError, RequestedOutput, float_text};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// The request-level parameters as read.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pub k: Option<KValue>,
    pub top_k: Option<KValue>,
    pub binary_output: bool,
    /// The first unknown name or ill-typed value.
    pub error: Option<RequestError>,
}

/// A scalar parameter value: an integer, a boolean, or anything else described for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scalar {
    Int(i64),
    Bool(bool),
    Other(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Int(x) => x.to_string(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Other(s) => s.clone(),
        }
    }

    fn into_k(self) -> KValue {
        match self {
            Scalar::Int(x) => KValue::Int(x),
            other => KValue::Other(other.text()),
        }
    }

    fn flag(self, place: &'static str, name: &'static str) -> Result<bool, RequestError> {
        match self {
            Scalar::Bool(b) => Ok(b),
            other => Err(RequestError::ParameterType {
                place,
                name,
                expected: "true or false",
                got: other.text(),
            }),
        }
    }
}

fn keep_first(slot: &mut Option<RequestError>, e: RequestError) {
    if slot.is_none() {
        *slot = Some(e);
    }
}

fn unknown(place: &'static str, name: &str, known: &'static str) -> RequestError {
    RequestError::UnknownParameter {
        place,
        name: name.chars().take(64).collect(),
        known,
    }
}

/// Request `parameters`: `k`, `top_k`, `binary_data_output`; `null` counts as none.
pub(crate) struct ParamsSeed;

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = Params;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Params, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed {
    type Value = Params;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameters object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Params, E> {
        Ok(Params::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
        let mut p = Params::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "k" => p.k = Some(map.next_value_seed(ScalarSeed)?.into_k()),
                "top_k" => p.top_k = Some(map.next_value_seed(ScalarSeed)?.into_k()),
                "binary_data_output" => {
                    match map
                        .next_value_seed(ScalarSeed)?
                        .flag("parameters", "binary_data_output")
                    {
                        Ok(b) => p.binary_output = b,
                        Err(e) => keep_first(&mut p.error, e),
                    }
                }
                other => {
                    keep_first(&mut p.error, unknown("parameters", other, REQUEST_PARAMS));
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }
}

/// An input's `parameters`: `binary_data_size` (a byte count), or the reason it is unusable.
pub(crate) struct TensorParamsSeed;

impl<'de> DeserializeSeed<'de> for TensorParamsSeed {
    type Value = Option<Result<u64, RequestError>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TensorParamsSeed {
    type Value = Option<Result<u64, RequestError>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an input's parameters object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut size = None;
        let mut error = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "binary_data_size" {
                size = Some(match map.next_value_seed(ScalarSeed)? {
                    Scalar::Int(x) if x >= 0 => Ok(x as u64),
                    other => Err(RequestError::ParameterType {
                        place: "inputs[0].parameters",
                        name: "binary_data_size",
                        expected: "a byte count (an integer >= 0)",
                        got: other.text(),
                    }),
                });
            } else {
                keep_first(
                    &mut error,
                    unknown("inputs[0].parameters", &key, "binary_data_size"),
                );
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(match error {
            Some(e) => Some(Err(e)),
            None => size,
        })
    }
}

/// Most entries of `outputs` kept (the servers have two outputs; more is an error anyway).
const MAX_OUTPUTS: usize = 16;

/// The request's `outputs`: the list (at most [`MAX_OUTPUTS`] kept) and the first problem in it.
pub(crate) struct OutputsSeed;

type Outputs = Option<(Vec<RequestedOutput>, Option<RequestError>)>;

impl<'de> DeserializeSeed<'de> for OutputsSeed {
    type Value = Outputs;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Outputs, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OutputsSeed {
    type Value = Outputs;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of requested outputs")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Outputs, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Outputs, A::Error> {
        let mut list = Vec::new();
        let mut error = None;
        while let Some((out, e)) = seq.next_element_seed(OutputSeed)? {
            if let Some(e) = e {
                keep_first(&mut error, e);
            }
            if list.len() < MAX_OUTPUTS {
                list.push(out);
            } else {
                keep_first(
                    &mut error,
                    RequestError::Json(format!("more than {MAX_OUTPUTS} requested outputs")),
                );
            }
        }
        Ok(Some((list, error)))
    }
}

/// One requested output: `name` and `parameters.binary_data`.
struct OutputSeed;

impl<'de> DeserializeSeed<'de> for OutputSeed {
    type Value = (RequestedOutput, Option<RequestError>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OutputSeed {
    type Value = (RequestedOutput, Option<RequestError>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a requested output object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut name: Option<String> = None;
        let mut binary = None;
        let mut error = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "name" => name = Some(map.next_value()?),
                "parameters" => {
                    let (b, e) = map.next_value_seed(OutputParamsSeed)?;
                    binary = b;
                    if let Some(e) = e {
                        keep_first(&mut error, e);
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        Ok((RequestedOutput { name, binary }, error))
    }
}

/// A requested output's `parameters`: `binary_data`.
struct OutputParamsSeed;

impl<'de> DeserializeSeed<'de> for OutputParamsSeed {
    type Value = (Option<bool>, Option<RequestError>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OutputParamsSeed {
    type Value = (Option<bool>, Option<RequestError>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an output's parameters object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut binary = None;
        let mut error = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "binary_data" {
                match map
                    .next_value_seed(ScalarSeed)?
                    .flag("outputs[].parameters", "binary_data")
                {
                    Ok(b) => binary = Some(b),
                    Err(e) => keep_first(&mut error, e),
                }
            } else {
                keep_first(
                    &mut error,
                    unknown("outputs[].parameters", &key, "binary_data"),
                );
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok((binary, error))
    }
}

/// Any JSON value as a [`Scalar`]; arrays and objects are skipped and described.
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameter value")
    }
    fn visit_u64<E: de::Error>(self, x: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(x).map_or_else(|_| Scalar::Other(x.to_string()), Scalar::Int))
    }
    fn visit_i64<E: de::Error>(self, x: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(x))
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other(float_text(x)))
    }
    fn visit_bool<E: de::Error>(self, x: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(x))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
        Ok(Scalar::Other(format!(
            "{:?}",
            s.chars().take(40).collect::<String>()
        )))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other("null".into()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("an array".into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("an object".into()))
    }
}
