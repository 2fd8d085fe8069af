//! The variant server's probes tell the truth about its model session, as a real process on a shipped model:
//! a model that loads but fails every run (its manifest claims 3 input channels, the network takes 1) fails
//! liveness with ONNX Runtime's error, so the kubelet restarts it, and never turns ready; a healthy server
//! passes both probes again and again (each liveness probe runs a one-sample self-test).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{family_dir, free_port, http, start};

fn first_variant(manifest: &Path) -> (String, String) {
    let text = std::fs::read_to_string(manifest).expect("manifest");
    let m = vp_core::Manifest::from_yaml(&text).expect("valid manifest");
    (m.variants[0].name.clone(), m.variants[0].file.clone())
}

/// Kills the child on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_session_that_fails_every_run_fails_liveness() {
    let src = family_dir();
    let manifest = src.join("ensemble.yaml");
    let (name, file) = first_variant(&manifest);
    let dir = std::env::temp_dir().join(format!("vp-variant-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let broken = text.replace("shape: [1, 28, 28]", "shape: [3, 28, 28]");
    assert_ne!(broken, text, "the fixture manifest names its input shape");
    std::fs::write(dir.join("ensemble.yaml"), broken).expect("write manifest");
    std::fs::copy(src.join(&file), dir.join(&file)).expect("copy model");
    let port = free_port();
    let server = Killed(
        Command::new(env!("CARGO_BIN_EXE_vp-variant"))
            .args([
                "--manifest",
                &dir.join("ensemble.yaml").display().to_string(),
                "--variant",
                &name,
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vp-variant"),
    );
    // It loads (sha256 and tensor names match) and listens; liveness then reports the broken session.
    let end = Instant::now() + Duration::from_secs(60);
    let live = format!("http://127.0.0.1:{port}/v2/health/live");
    while http::blocking_get(&live).is_err() {
        assert!(Instant::now() < end, "vp-variant did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = http::raw(port, "GET", "/v2/health/live", b"");
    assert_eq!(status, 500, "liveness of a broken session: {body}");
    assert!(
        body.contains("\"live\":false") && body.contains("invalid dimensions"),
        "the error names ONNX Runtime's complaint: {body}"
    );
    let (status, body) = http::raw(port, "GET", "/v2/health/ready", b"");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("session failed"), "{body}");
    let req = serde_json::json!({"inputs": [{"name": "image", "shape": [1, 3, 28, 28], "datatype": "UINT8",
        "data": vec![0u8; 3 * 28 * 28]}]});
    let (status, body) = http::raw(
        port,
        "POST",
        &format!("/v2/models/{name}/infer"),
        &serde_json::to_vec(&req).expect("json"),
    );
    assert_eq!(status, 503, "a server that never warmed up refuses: {body}");
    // Still failing later: nothing but a restart mends it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http::raw(port, "GET", "/v2/health/live", b"").0, 500);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_working_session_passes_its_self_tests() {
    let manifest = family_dir().join("ensemble.yaml");
    let (name, _) = first_variant(&manifest);
    let s = start(&manifest, &name);
    for _ in 0..20 {
        let (status, body) = http::raw(s.port, "GET", "/v2/health/live", b"");
        assert_eq!((status, body.as_str()), (200, "{\"live\":true}"));
        assert_eq!(http::raw(s.port, "GET", "/v2/health/ready", b"").0, 200);
    }
}
