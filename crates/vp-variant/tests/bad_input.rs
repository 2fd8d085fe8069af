//! The variant server as a real process on a shipped model (ONNX Runtime, sockets): every kind of bad input gets
//! a 4xx with a clear message and the server keeps serving; a model whose sha256 does not match the manifest is
//! refused; a missing ONNX Runtime library is reported with the fix.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{family_dir, free_port, http, start};

fn infer_body(shape: Value, datatype: &str, data: Value, k: Option<Value>) -> Vec<u8> {
    let mut v =
        json!({"inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": data}]});
    if let Some(k) = k {
        v["parameters"] = json!({ "k": k });
    }
    serde_json::to_vec(&v).expect("json")
}

fn first_variant(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).expect("manifest");
    let m = vp_core::Manifest::from_yaml(&text).expect("valid manifest");
    m.variants[0].name.clone()
}

#[test]
fn bad_inputs_get_clear_4xx_and_the_server_keeps_serving() {
    let manifest = family_dir().join("ensemble.yaml");
    let name = first_variant(&manifest);
    let s = start(&manifest, &name);
    let path = format!("/v2/models/{name}/infer");
    let good = infer_body(
        json!([1, 1, 28, 28]),
        "UINT8",
        json!(vec![0u8; 784]),
        Some(json!(3)),
    );
    let (st, body) = http::raw(s.port, "POST", &path, &good);
    assert_eq!(st, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).expect("json reply");
    assert_eq!(reply["outputs"][0]["shape"], json!([1, 3]));

    let mut huge = b"{\"inputs\": [{\"name\": \"image\", \"data\": [".to_vec();
    huge.extend(b"1,".repeat(2_000_000));
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        (
            path.clone(),
            infer_body(json!([1, 1, 28, 27]), "UINT8", json!(vec![0u8; 756]), None),
            400,
            "shape",
        ),
        (
            path.clone(),
            infer_body(json!([1, 28, 28]), "UINT8", json!(vec![0u8; 784]), None),
            400,
            "shape",
        ),
        (
            path.clone(),
            infer_body(
                json!([1, 1, 28, 28]),
                "FP32",
                json!(vec![0.5f32; 784]),
                None,
            ),
            400,
            "UINT8",
        ),
        (
            path.clone(),
            infer_body(json!([1, 1, 28, 28]), "UINT8", json!(vec![0u8; 700]), None),
            400,
            "must hold 784",
        ),
        (
            path.clone(),
            infer_body(
                json!([1, 1, 28, 28]),
                "UINT8",
                json!(vec![300u16; 784]),
                None,
            ),
            400,
            "UINT8 value",
        ),
        (
            path.clone(),
            infer_body(json!([99, 1, 28, 28]), "UINT8", json!(vec![0u8; 784]), None),
            400,
            "N <= 16",
        ),
        (
            path.clone(),
            infer_body(
                json!([1, 1, 28, 28]),
                "UINT8",
                json!(vec![0u8; 784]),
                Some(json!(0)),
            ),
            400,
            "between 1 and",
        ),
        (
            path.clone(),
            infer_body(
                json!([1, 1, 28, 28]),
                "UINT8",
                json!(vec![0u8; 784]),
                Some(json!(6)),
            ),
            400,
            "between 1 and",
        ),
        (
            path.clone(),
            infer_body(
                json!([1, 1, 28, 28]),
                "UINT8",
                json!(vec![0u8; 784]),
                Some(json!("x")),
            ),
            400,
            "integer",
        ),
        (
            path.clone(),
            good[..good.len() / 2].to_vec(),
            400,
            "malformed request JSON",
        ),
        (
            path.clone(),
            b"{\"inputs\": [}".to_vec(),
            400,
            "malformed request JSON",
        ),
        (
            path.clone(),
            vec![0xff, 0xd8, 0xff, 0x00, 0x13],
            400,
            "malformed request JSON",
        ),
        (path.clone(), Vec::new(), 400, "empty"),
        (
            path.clone(),
            b"{\"inputs\": []}".to_vec(),
            400,
            "exactly one input",
        ),
        (path.clone(), huge, 413, "larger than"),
        (
            "/v2/models/nope/infer".to_string(),
            good.clone(),
            404,
            "unknown model",
        ),
        (
            "/v3/whatever".to_string(),
            Vec::new(),
            404,
            "no such endpoint",
        ),
    ];
    for (p, body, want, msg) in cases {
        let (st, text) = http::raw(s.port, "POST", &p, &body);
        assert_eq!(st, want, "{p}: {text}");
        assert!(text.contains(msg), "{p}: {text:?} should mention {msg:?}");
        // Still serving after each bad request.
        assert_eq!(http::raw(s.port, "POST", &path, &good).0, 200);
    }

    // A body cut off mid-stream (Content-Length larger than what arrives): answered or closed, never a hang.
    let mut sock = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let head = format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
    sock.write_all(head.as_bytes()).expect("head");
    sock.write_all(&good[..100]).expect("part");
    sock.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut out = Vec::new();
    let started = Instant::now();
    let _ = sock.read_to_end(&mut out);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "truncated body hung the connection"
    );
    let (st, _) = http::parse(&out);
    assert!(
        st == 0 || (400..500).contains(&st),
        "truncated body got {st}"
    );
    assert_eq!(http::raw(s.port, "POST", &path, &good).0, 200);

    // Batches give the same answers as single samples.
    let batch = infer_body(
        json!([2, 1, 28, 28]),
        "UINT8",
        json!([vec![0u8; 784], vec![255u8; 784]]),
        Some(json!(2)),
    );
    let (st, text) = http::raw(s.port, "POST", &path, &batch);
    assert_eq!(st, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["outputs"][0]["shape"], json!([2, 2]));
    let one = infer_body(
        json!([1, 1, 28, 28]),
        "UINT8",
        json!(vec![255u8; 784]),
        Some(json!(2)),
    );
    let w: Value = serde_json::from_str(&http::raw(s.port, "POST", &path, &one).1).expect("json");
    let classes = |x: &Value, at: usize| {
        (
            x["outputs"][0]["data"][at].clone(),
            x["outputs"][0]["data"][at + 1].clone(),
        )
    };
    assert_eq!(classes(&v, 2), classes(&w, 0));

    let (st, meta) = http::raw(s.port, "GET", &format!("/v2/models/{name}"), b"");
    assert_eq!(st, 200);
    assert!(
        meta.contains("\"UINT8\"") && meta.contains("sha256"),
        "{meta}"
    );
    let (_, metrics) = http::raw(s.port, "GET", "/metrics", b"");
    assert!(
        metrics.contains("vp_variant_requests_total{outcome=\"client_error\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("vp_variant_model_info{"), "{metrics}");
}

/// A copy of the family with one model file altered: the server must refuse it.
#[test]
fn a_model_that_does_not_match_its_sha256_is_refused() {
    let src = family_dir();
    let manifest = src.join("ensemble.yaml");
    let name = first_variant(&manifest);
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let m = vp_core::Manifest::from_yaml(&text).expect("valid");
    let file = &m.variants[0].file;
    let dir = std::env::temp_dir().join(format!("vp-variant-sha-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    std::fs::copy(&manifest, dir.join("ensemble.yaml")).expect("copy manifest");
    let original = std::fs::read(src.join(file)).expect("model");
    let run = |bytes: &[u8]| {
        std::fs::write(dir.join(file), bytes).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_vp-variant"))
            .args([
                "--manifest",
                &dir.join("ensemble.yaml").display().to_string(),
                "--variant",
                &name,
            ])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .output()
            .expect("run");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // Same size, one byte changed: the checksum does not match.
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xFF;
    let err = run(&flipped);
    assert!(err.contains("sha256") && err.contains("refusing"), "{err}");
    // One byte longer than the manifest says: refused before it is read or hashed.
    let mut longer = original;
    longer.push(0);
    let err = run(&longer);
    assert!(
        err.contains("larger than") && err.contains("refusing"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_onnx_runtime_names_the_fix() {
    let manifest = family_dir().join("ensemble.yaml");
    let name = first_variant(&manifest);
    let out = Command::new(env!("CARGO_BIN_EXE_vp-variant"))
        .args([
            "--manifest",
            &manifest.display().to_string(),
            "--variant",
            &name,
        ])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scripts/setup.sh") && err.contains("ORT_DYLIB_PATH"),
        "{err}"
    );
}

#[test]
fn unknown_variant_and_bad_flags_are_reported() {
    let manifest = family_dir().join("ensemble.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_vp-variant"))
        .args([
            "--manifest",
            &manifest.display().to_string(),
            "--variant",
            "no-such-variant",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in family"));
    let name = first_variant(&manifest);
    let out = Command::new(env!("CARGO_BIN_EXE_vp-variant"))
        .args([
            "--manifest",
            &manifest.display().to_string(),
            "--variant",
            &name,
            "--default-k",
            "9",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--default-k"));
}
