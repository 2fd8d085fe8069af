//! Helpers shared by the aggregator's integration tests: stand-in variant servers (in-process axum servers with
//! scripted replies, delays, hangs and faults), a synthetic family manifest, and the aggregator as a process.
#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const CLASSES: [&str; 10] = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"];

/// How a stand-in variant behaves.
#[derive(Clone)]
pub struct Fake {
    pub name: String,
    pub probs: Vec<f32>,
    pub delay: Duration,
    pub garbage: bool,
    /// While set, infer requests are accepted and never answered (readiness still passes).
    pub hang: Arc<AtomicBool>,
    /// How long `/v2/health/ready` takes to answer.
    pub ready_delay: Duration,
    /// While set, `/v2/health/ready` never answers.
    pub ready_hang: Arc<AtomicBool>,
}

pub async fn fake_infer(
    State(f): State<Arc<Fake>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    tokio::time::sleep(f.delay).await;
    if f.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    if f.garbage {
        return (axum::http::StatusCode::OK, "{\"outputs\": 17}").into_response();
    }
    // The aggregator sends the binary tensor extension by default: the JSON header is the first H bytes.
    let header_len = headers
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(body.len())
        .min(body.len());
    let req: Value = serde_json::from_slice(&body[..header_len]).unwrap_or_default();
    let n = req["inputs"][0]["shape"][0].as_u64().unwrap_or(1) as usize;
    let k = req["parameters"]["k"].as_u64().unwrap_or(3) as usize;
    let rows: Vec<_> = (0..n).map(|_| vp_core::top_k(&f.probs, k)).collect();
    axum::Json(vp_core::oip::topk_response(&f.name, None, &rows, k)).into_response()
}

/// Starts a stand-in variant on a free port; returns its base URL.
pub async fn fake(f: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ready_delay, ready_hang) = (f.ready_delay, f.ready_hang.clone());
    let app = Router::new()
        .route(
            "/v2/health/ready",
            get(move || async move {
                tokio::time::sleep(ready_delay).await;
                if ready_hang.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                "{\"ready\": true}"
            }),
        )
        .route("/v2/models/{name}/infer", post(fake_infer))
        .with_state(Arc::new(f));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

pub fn probs(top: usize, p: f32) -> Vec<f32> {
    let rest = (1.0 - p) / 9.0;
    (0..10).map(|c| if c == top { p } else { rest }).collect()
}

/// A synthetic three-variant manifest (test fixture: made-up accuracies, no model files needed here).
pub fn manifest_yaml() -> String {
    let model = |name: &str| {
        format!(
            "name: {name}\n    file: {name}.onnx\n    sha256: {}\n    bytes: 1\n    resolution: 28\n    width: 1.0\n    \
             head_channels: 8\n    params: 1\n    macs: 1\n    accuracy: 0.5\n",
            "0".repeat(64)
        )
    };
    let mut s = format!(
        "schema_version: 1\nfamily: fake\ndataset:\n  name: fashion-mnist\n  classes: [{}]\n  test_samples: 10\n\
         input: {{name: image, dtype: uint8, layout: NCHW, shape: [1, 28, 28]}}\n\
         output: {{name: probs, dtype: float32, classes: 10}}\nvariants:\n",
        CLASSES.join(", ")
    );
    for v in ["v0", "v1", "v2"] {
        s += &format!("  - {}", model(v));
    }
    s += &format!("baseline:\n    {}", model("base"));
    s += "subsets:\n";
    for mask in 1u32..8 {
        let names: Vec<String> = (0..3)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| format!("v{i}"))
            .collect();
        let a = 0.5 + f64::from(mask) / 100.0;
        s += &format!(
            "  - variants: [{}]\n    accuracy: {a}\n    topk_accuracy: [{a}, {a}, {a}, {a}, {a}]\n",
            names.join(", ")
        );
    }
    s
}

pub struct Aggregator {
    pub child: Child,
    pub base: String,
    pub dir: PathBuf,
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn config(variants: &[(&str, &str)], extra: &str) -> String {
    let mut s = format!(
        "schema_version: 1\nmanifest: ensemble.yaml\nprobe_interval_ms: 100\n{extra}variants:\n"
    );
    for (n, u) in variants {
        s += &format!("  - name: {n}\n    url: {u}\n");
    }
    s
}

pub async fn start(tag: &str, config_text: &str) -> Aggregator {
    start_with(tag, config_text, &[]).await
}

/// Starts the aggregator with extra flags.
pub async fn start_with(tag: &str, config_text: &str, flags: &[&str]) -> Aggregator {
    let dir = std::env::temp_dir().join(format!("vp-agg-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    std::fs::write(dir.join("ensemble.yaml"), manifest_yaml()).expect("manifest");
    std::fs::write(dir.join("aggregator.yaml"), config_text).expect("config");
    // Not bind(0)-and-close: such a port is in the ephemeral range, where any client can take it first.
    let port = vp_server::ports::free_port().expect("free port");
    let child = Command::new(env!("CARGO_BIN_EXE_vp-aggregator"))
        .args([
            "--config",
            &dir.join("aggregator.yaml").display().to_string(),
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(if flags.contains(&"--max-image-bytes") {
            &[][..]
        } else {
            &["--max-image-bytes", "100000"][..]
        })
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let agg = Aggregator {
        child,
        base: format!("http://127.0.0.1:{port}"),
        dir,
    };
    let c = client();
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if c.get(format!("{}/v2/health/live", agg.base))
            .send()
            .await
            .is_ok()
        {
            return agg;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("aggregator did not start");
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

pub fn image_request(k: Option<u64>) -> Value {
    let mut v = json!({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "UINT8", "data": vec![0u8; 784]}]});
    if let Some(k) = k {
        v["parameters"] = json!({ "k": k });
    }
    v
}

pub async fn infer(agg: &Aggregator, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}/v2/models/fake/infer", agg.base))
        .json(body)
        .send()
        .await
        .expect("send");
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Starts a stand-in variant written on raw TCP that answers each connection's first infer request and closes
/// the connection, unanswered, when a second infer request arrives on it: what a variant's idle close racing
/// the reuse of a pooled keep-alive connection looks like to the aggregator. Readiness is always answered.
pub async fn fake_closing_on_reuse(f: Fake) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let f = Arc::new(f);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let f = f.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut infers = 0;
                loop {
                    // One request: head up to the blank line, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let reply = if head.starts_with("post") {
                        infers += 1;
                        if infers > 1 {
                            return; // closes the connection without a reply
                        }
                        let rows = vec![vp_core::top_k(&f.probs, 3)];
                        serde_json::to_string(&vp_core::oip::topk_response(&f.name, None, &rows, 3))
                            .expect("json")
                    } else {
                        "{\"ready\": true}".to_string()
                    };
                    buf.drain(..head_end + len);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// `GET path` on the aggregator: the status code and the JSON body (`Null` when the body is not JSON).
pub async fn get_json(agg: &Aggregator, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}{path}", agg.base))
        .send()
        .await
        .expect("send");
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

pub fn fake_spec(name: &str, top: usize, p: f32) -> Fake {
    Fake {
        name: name.into(),
        probs: probs(top, p),
        delay: Duration::ZERO,
        garbage: false,
        hang: Arc::new(AtomicBool::new(false)),
        ready_delay: Duration::ZERO,
        ready_hang: Arc::new(AtomicBool::new(false)),
    }
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn proc_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .expect("field")
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .count()
}

/// Median and maximum of durations in milliseconds.
pub fn p50_max(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}
