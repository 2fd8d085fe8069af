//! Fuzz target: the typed OIP v2 request decoder on arbitrary bytes. It must never panic, and whatever it
//! accepts must be a well-formed batch of the spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vp_core::{InputSpec, decode_request};

fuzz_target!(|data: &[u8]| {
    let spec = InputSpec {
        name: "image".into(),
        chw: [1, 2, 3],
        max_batch: 8,
    };
    if let Ok(r) = decode_request(data, &spec) {
        assert!((1..=8).contains(&r.batch.n));
        assert_eq!(r.batch.data.len(), r.batch.n * 6);
    }
});
