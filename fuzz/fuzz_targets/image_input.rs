//! Fuzz target: the aggregator's image input (header inspection, then the decode with the allowance the header
//! gave) on arbitrary bytes. It must never panic, never allocate past the image crate's limit, and whatever it
//! accepts must be one sample of the requested size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = vp_aggregator::inspect(data) {
        // Keep each run small: a header promising more than 64 MiB is refused by the server's budget anyway.
        if header.decode_bytes > 64 << 20 {
            return;
        }
        if let Ok(sample) = vp_aggregator::image_to_sample(data, [1, 28, 28]) {
            assert_eq!(sample.len(), 784);
        }
    }
});
