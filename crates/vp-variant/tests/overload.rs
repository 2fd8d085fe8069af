//! The variant server under overload, as a real process on the shipped model: 64 clients sending batch-256
//! requests at once get answers or an immediate 503 with `Retry-After` (never a crash), peak RSS stays under the
//! memory budget, and the readiness probe keeps answering while large batches run (inference never blocks the
//! thread that answers probes). Probe latencies are printed; the assertion is the kubelet's 1 s probe timeout.

mod common;

use common::{family_dir, start_with};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Sends one request and returns (status, whether `Retry-After: 1` was set).
fn post(port: u16, path: &str, body: &[u8]) -> (u16, bool) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, false);
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let retry = text
        .split("\r\n\r\n")
        .next()
        .is_some_and(|h| h.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"));
    (status, retry)
}

fn proc_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .expect("field")
}

#[test]
fn large_batches_from_64_clients_are_shed_while_probes_stay_fast() {
    let manifest = family_dir().join("ensemble.yaml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let name = vp_core::Manifest::from_yaml(&text)
        .expect("manifest")
        .variants[0]
        .name
        .clone();
    let budget_mib = 256;
    let s = start_with(
        &manifest,
        &name,
        &[
            "--max-batch",
            "256",
            "--max-in-flight",
            "4",
            "--max-queue",
            "4",
        ],
    );
    let pid = s.child.id();
    let n = 256;
    let data: Vec<u8> = (0..n * 784).map(|i| (i % 251) as u8).collect();
    let body = serde_json::to_vec(&serde_json::json!({"inputs": [{"name": "image",
        "shape": [n, 1, 28, 28], "datatype": "UINT8", "data": data}]}))
    .expect("json");
    let body = Arc::new(body);
    let path = format!("/v2/models/{name}/infer");
    let stop = Arc::new(AtomicBool::new(false));
    let port = s.port;

    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut times = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let st =
                    common::http::blocking_get(&format!("http://127.0.0.1:{port}/v2/health/ready"));
                times.push((t.elapsed(), st));
                std::thread::sleep(Duration::from_millis(50));
            }
            times
        })
    };
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let (stop, body, path) = (stop.clone(), body.clone(), path.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    seen.push(post(port, &path, &body));
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);
    let replies: Vec<(u16, bool)> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    let probes = prober.join().expect("prober");

    let ok = replies.iter().filter(|r| r.0 == 200).count();
    let shed = replies.iter().filter(|r| r.0 == 503).count();
    let mut probe_ms: Vec<f64> = probes.iter().map(|(d, _)| d.as_secs_f64() * 1e3).collect();
    probe_ms.sort_by(f64::total_cmp);
    let peak = proc_kib(pid, "VmHWM");
    eprintln!(
        "64 clients x batch {n} for 4 s: {ok} answered, {shed} shed (503); readiness probes: {} sent, \
         p50 {:.1} ms, max {:.1} ms; peak RSS {peak} KiB (budget {} KiB)",
        probes.len(),
        probe_ms[probe_ms.len() / 2],
        probe_ms[probe_ms.len() - 1],
        budget_mib * 1024
    );
    for (st, retry) in &replies {
        assert!(*st == 200 || *st == 503, "unexpected status {st}");
        if *st == 503 {
            assert!(retry, "a 503 without Retry-After: 1");
        }
    }
    assert!(ok > 0, "nothing was answered");
    assert!(
        shed > 0,
        "nothing was shed at 64 clients with 4 in flight + 4 queued"
    );
    assert!(
        probes.iter().all(|(_, st)| *st == Ok(200)),
        "a readiness probe failed"
    );
    assert!(
        probe_ms[probe_ms.len() - 1] < 1000.0,
        "a readiness probe took longer than the kubelet's 1 s timeout"
    );
    assert!(
        peak < budget_mib * 1024,
        "peak RSS {peak} KiB over the budget"
    );
    // Still alive and serving.
    assert_eq!(post(port, &path, &body).0, 200);
    let metrics = common::http::raw(port, "GET", "/metrics", b"").1;
    assert!(
        metrics.contains(&format!("vp_variant_shed_requests_total {shed}")),
        "shed count not in metrics"
    );
}
