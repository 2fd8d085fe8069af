//! Property-based tests (proptest) of the OIP request decoder and the k validation: valid requests of any batch
//! size, nesting and key order decode to exactly their bytes; any other byte string is an error, never a panic;
//! data longer or shorter than the declared shape is rejected with both counts; k is accepted exactly in
//! 1..=classes/2; binary-extension requests decode to the same bytes and any size mismatch is refused.

use proptest::prelude::*;
use serde_json::{Value, json};
use vp_core::{
    InputError, InputSpec, KValue, RequestError, decode_infer, decode_request, k_from_request,
    validate_k,
};

fn spec() -> InputSpec {
    InputSpec {
        name: "image".into(),
        chw: [1, 2, 3],
        max_batch: 8,
    }
}

/// Serialises a request with the tensor's keys in the given order and the data flat or nested per sample.
fn body(n: usize, data: &[u8], shape_first: bool, nested: bool, k: Option<i64>) -> Vec<u8> {
    let values: Value = if nested {
        json!(
            data.chunks(6)
                .map(|s| json!([[&s[..3], &s[3..]]]))
                .collect::<Vec<_>>()
        )
    } else {
        json!(data)
    };
    let shape = json!([n, 1, 2, 3]);
    let tensor = if shape_first {
        format!(r#"{{"name":"image","shape":{shape},"datatype":"UINT8","data":{values}}}"#)
    } else {
        format!(r#"{{"data":{values},"datatype":"UINT8","name":"image","shape":{shape}}}"#)
    };
    let params = k
        .map(|k| format!(r#","parameters":{{"k":{k}}}"#))
        .unwrap_or_default();
    format!(r#"{{"id":"r","inputs":[{tensor}]{params}}}"#).into_bytes()
}

proptest! {
    #[test]
    fn valid_requests_decode_to_their_bytes(
        n in 1usize..=8,
        seed in any::<u64>(),
        shape_first in any::<bool>(),
        nested in any::<bool>(),
        k in proptest::option::of(-3i64..10),
    ) {
        let data: Vec<u8> = (0..n * 6).map(|i| (seed.wrapping_mul(i as u64 + 1) >> 7) as u8).collect();
        let r = decode_request(&body(n, &data, shape_first, nested, k), &spec()).expect("valid request");
        prop_assert_eq!(r.batch.n, n);
        prop_assert_eq!(&r.batch.data, &data);
        prop_assert_eq!(r.id.as_deref(), Some("r"));
        prop_assert_eq!(r.k, k.map(KValue::Int));
    }

    #[test]
    fn data_not_matching_the_shape_is_rejected_with_both_counts(
        n in 1usize..=8,
        len in 0usize..120,
        shape_first in any::<bool>(),
    ) {
        prop_assume!(len != n * 6);
        let data = vec![7u8; len];
        let e = decode_request(&body(n, &data, shape_first, false, None), &spec()).expect_err("wrong length");
        let expected_err = RequestError::Input(InputError::DataLength {
            name: "image".into(),
            shape: vec![n as i64, 1, 2, 3],
            expected: n * 6,
            got: len,
        });
        prop_assert_eq!(e, expected_err);
    }

    #[test]
    fn arbitrary_bytes_are_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes, &spec());
    }

    #[test]
    fn corrupted_valid_requests_never_panic(
        n in 1usize..=8,
        pos in any::<prop::sample::Index>(),
        junk in proptest::collection::vec(any::<u8>(), 1..8),
        cut in any::<bool>(),
    ) {
        let mut b = body(n, &vec![1u8; n * 6], true, false, Some(2));
        let at = pos.index(b.len());
        if cut {
            b.truncate(at);
        } else {
            b.splice(at..at, junk);
        }
        if let Ok(r) = decode_request(&b, &spec()) {
            // Whatever survives the corruption must still be a well-formed batch.
            prop_assert_eq!(r.batch.data.len(), r.batch.n * 6);
        }
    }

    #[test]
    fn k_is_valid_exactly_between_1_and_half_the_classes(k in any::<i64>(), classes in 0usize..2000) {
        let ok = k >= 1 && (k as u64) <= (classes / 2) as u64;
        prop_assert_eq!(validate_k(k, classes).is_ok(), ok);
        prop_assert_eq!(k_from_request(Some(&KValue::Int(k)), classes, 1).is_ok(), ok);
        if ok {
            prop_assert_eq!(validate_k(k, classes), Ok(k as usize));
        }
    }

    #[test]
    fn non_integer_k_is_always_rejected(x in any::<f64>(), s in "[a-z]{0,8}") {
        prop_assume!(x.fract() != 0.0 || !x.is_finite());
        let mut v = serde_json::from_slice::<Value>(&body(1, &[0; 6], true, false, None)).expect("json");
        for k in [json!(x), json!(s), json!([1]), json!({"k": 1}), Value::Bool(true)] {
            if k.is_null() {
                continue;
            }
            v["parameters"] = json!({ "k": k });
            let r = decode_request(&serde_json::to_vec(&v).expect("json"), &spec()).expect("decodes");
            prop_assert!(k_from_request(r.k.as_ref(), 10, 3).is_err(), "{:?}", r.k);
        }
    }

    #[test]
    fn binary_requests_decode_to_their_bytes_and_a_wrong_size_is_refused(
        n in 1usize..=8,
        seed in any::<u64>(),
        declared_delta in -3i64..=3,
        extra in 0usize..4,
    ) {
        let data: Vec<u8> = (0..n * 6).map(|i| (seed.wrapping_mul(i as u64 + 1) >> 9) as u8).collect();
        let declared = (n * 6) as i64 + declared_delta;
        let header = format!(
            r#"{{"inputs":[{{"name":"image","shape":[{n},1,2,3],"datatype":"UINT8","parameters":{{"binary_data_size":{declared}}}}}]}}"#
        );
        let mut b = header.clone().into_bytes();
        b.extend_from_slice(&data);
        b.extend(std::iter::repeat_n(0u8, extra));
        let r = decode_infer(&b, Some(header.len()), &spec());
        if declared_delta == 0 && extra == 0 {
            let r = r.expect("valid binary request");
            prop_assert_eq!(r.batch.n, n);
            prop_assert_eq!(r.batch.data, data);
        } else {
            prop_assert!(matches!(r, Err(RequestError::Binary(_))), "{:?}", r);
        }
    }

    #[test]
    fn arbitrary_bytes_with_any_header_length_are_an_error_not_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        h in 0usize..600,
    ) {
        let _ = decode_infer(&bytes, Some(h), &spec());
    }
}
