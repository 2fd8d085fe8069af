//! The variant server's Open Inference Protocol surface as a real process on a shipped model: the binary tensor
//! extension (request and reply) gives the same answers as JSON and is checked as strictly; versioned paths
//! work for the advertised version and 404 otherwise; `top_k` is an alias of `k`; unknown parameters and
//! outputs are named in a 400; every error, 405 included, is `{"error": ...}` JSON. The official Python clients
//! are driven against both servers by `scripts/test-oip.sh`.

use serde_json::{Value, json};

mod common;

use common::{family_dir, http, start};

fn first_variant() -> String {
    let text = std::fs::read_to_string(family_dir().join("ensemble.yaml")).expect("manifest");
    let m = vp_core::Manifest::from_yaml(&text).expect("valid manifest");
    m.variants[0].name.clone()
}

/// Two different images: a dark and a light one with a stripe.
fn pixels() -> Vec<u8> {
    let mut px = vec![0u8; 2 * 784];
    for (i, p) in px.iter_mut().enumerate().skip(784) {
        *p = if (i / 28) % 7 < 3 { 250 } else { 30 };
    }
    px
}

fn json_request(params: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "inputs": [{"name": "image", "shape": [2, 1, 28, 28], "datatype": "UINT8", "data": pixels()}],
        "parameters": params,
    }))
    .expect("json")
}

/// A binary-extension request: (header-length header line, body).
fn binary_request(declared: usize, params: Value) -> (String, Vec<u8>) {
    let header = serde_json::to_vec(&json!({
        "inputs": [{"name": "image", "shape": [2, 1, 28, 28], "datatype": "UINT8",
                    "parameters": {"binary_data_size": declared}}],
        "parameters": params,
    }))
    .expect("json");
    let line = format!("Inference-Header-Content-Length: {}", header.len());
    let mut body = header;
    body.extend(pixels());
    (line, body)
}

/// Path, method, extra header lines, body, expected status, expected part of the error message.
type BadCase = (
    String,
    &'static str,
    Vec<String>,
    Vec<u8>,
    u16,
    &'static str,
);

/// The header value of `name` in a raw response head.
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

#[test]
fn binary_extension_versions_parameters_and_json_errors() {
    let name = first_variant();
    let s = start(&family_dir().join("ensemble.yaml"), &name);
    let infer = format!("/v2/models/{name}/infer");

    // JSON reference answer.
    let (st, text) = http::raw(s.port, "POST", &infer, &json_request(json!({"k": 3})));
    assert_eq!(st, 200, "{text}");
    let reference: Value = serde_json::from_str(&text).expect("json");

    // Binary request, binary reply: same classes and probabilities.
    let (line, body) = binary_request(2 * 784, json!({"top_k": 3, "binary_data_output": true}));
    let (st, head, reply) = http::raw_bytes(s.port, "POST", &infer, &[line], &body);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&reply));
    let h: usize = header_value(&head, "inference-header-content-length")
        .and_then(|v| v.parse().ok())
        .expect("binary reply has Inference-Header-Content-Length");
    let meta: Value = serde_json::from_slice(&reply[..h]).expect("json header");
    assert_eq!(meta["outputs"][0]["name"], "classes");
    assert_eq!(meta["outputs"][0]["parameters"]["binary_data_size"], 48);
    assert_eq!(meta["outputs"][1]["parameters"]["binary_data_size"], 24);
    let bin = &reply[h..];
    assert_eq!(bin.len(), 72);
    let classes: Vec<i64> = bin[..48]
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let probs: Vec<f32> = bin[48..]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    assert_eq!(json!(classes), reference["outputs"][0]["data"]);
    let reference_probs: Vec<f32> = reference["outputs"][1]["data"]
        .as_array()
        .expect("probs")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect();
    assert_eq!(probs, reference_probs);

    // Binary request, JSON reply of one requested output, on the versioned path.
    let header = serde_json::to_vec(&json!({
        "inputs": [{"name": "image", "shape": [2, 1, 28, 28], "datatype": "UINT8",
                    "parameters": {"binary_data_size": 1568}}],
        "outputs": [{"name": "probs"}],
    }))
    .expect("json");
    let line = format!("Inference-Header-Content-Length: {}", header.len());
    let mut body = header;
    body.extend(pixels());
    let versioned = format!("/v2/models/{name}/versions/1/infer");
    let (st, head, reply) = http::raw_bytes(s.port, "POST", &versioned, &[line], &body);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&reply));
    assert!(header_value(&head, "inference-header-content-length").is_none());
    let v: Value = serde_json::from_slice(&reply).expect("json reply");
    assert_eq!(v["outputs"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["outputs"][0]["name"], "probs");

    for (path, want) in [
        (format!("/v2/models/{name}/versions/1"), 200),
        (format!("/v2/models/{name}/versions/1/ready"), 200),
        (format!("/v2/models/{name}/versions/2"), 404),
        (format!("/v2/models/{name}/versions/2/ready"), 404),
    ] {
        let (st, text) = http::raw(s.port, "GET", &path, b"");
        assert_eq!(st, want, "{path}: {text}");
        if want == 404 {
            let e: Value = serde_json::from_str(&text).expect("JSON error");
            assert!(
                e["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("no version \"2\"")),
                "{text}"
            );
        }
    }

    // Every error is JSON {"error": ...}, the router's own 405 included.
    let (line, short) = binary_request(2 * 784 - 1, Value::Null);
    let bad: Vec<BadCase> = vec![
        (infer.clone(), "GET", vec![], vec![], 405, "allowed: POST"),
        (
            format!("/v2/models/{name}/versions/7/infer"),
            "POST",
            vec![],
            json_request(Value::Null),
            404,
            "no version \"7\"",
        ),
        (
            infer.clone(),
            "POST",
            vec![line],
            short,
            400,
            "binary_data_size must be 1568, got 1567",
        ),
        (
            infer.clone(),
            "POST",
            vec!["Inference-Header-Content-Length: lots".into()],
            json_request(Value::Null),
            400,
            "must be a byte count",
        ),
        (
            infer.clone(),
            "POST",
            vec![],
            json_request(json!({"priority": 1})),
            400,
            "unknown parameter \"priority\"",
        ),
        (
            infer.clone(),
            "POST",
            vec![],
            json_request(json!({"k": 2, "top_k": 2})),
            400,
            "give one of them",
        ),
        (
            infer.clone(),
            "POST",
            vec![],
            serde_json::to_vec(&json!({
                "inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "UINT8", "data": vec![0u8; 784]}],
                "outputs": [{"name": "logits"}],
            }))
            .expect("json"),
            400,
            "unknown output \"logits\"",
        ),
    ];
    for (path, method, headers, body, want, msg) in bad {
        let (st, head, reply) = http::raw_bytes(s.port, method, &path, &headers, &body);
        let text = String::from_utf8_lossy(&reply);
        assert_eq!(st, want, "{method} {path}: {text}");
        assert!(
            header_value(&head, "content-type").is_some_and(|v| v.starts_with("application/json")),
            "{head}"
        );
        let e: Value = serde_json::from_slice(&reply).expect("JSON error body");
        let m = e["error"].as_str().unwrap_or_default();
        assert!(
            m.contains(msg),
            "{method} {path}: {m:?} should mention {msg:?}"
        );
    }
}
