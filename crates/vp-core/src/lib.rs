//! Pure data-plane logic shared by the variant server, the aggregator and vpctl: the family manifest, top-k
//! replies, the combiner, input validation, the OIP v2 wire types and the aggregator config. No I/O here, so
//! everything is unit-tested directly.

pub mod combine;
pub mod config;
pub mod digest;
pub mod input;
pub mod manifest;
pub mod oip;
mod params;
pub mod reply;
pub mod request;
pub mod topk;

pub use combine::{CombineRule, Combined, Combiner};
pub use config::{AggregatorConfig, ConfigError, VariantEndpoint};
pub use digest::config_digest;
pub use input::{ImageBatch, InputError, InputSpec, k_from_request};
pub use manifest::{Manifest, ManifestError, ModelEntry, SubsetRow};
pub use request::{
    DecodedRequest, KValue, RequestError, RequestedOutput, decode_infer, decode_request,
};
pub use topk::{KError, TopK, top_k, validate_k};
