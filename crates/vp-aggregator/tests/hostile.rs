//! The aggregator under hostile load, as a real process on loopback: decompression bombs and truncated images
//! (refused from the header, peak RSS within the memory budget), slow-header and idle connections (closed by the
//! timeouts, descriptors back to baseline, valid requests served meanwhile), and a variant that hangs while
//! passing readiness (ejected, then re-admitted once it answers again). Durations are printed, not asserted,
//! except where a bound is the behaviour itself (a refused bomb must not have been decoded; an ejected variant
//! must not be waited for), and stalls of the aggregator process itself (SIGSTOP longer than the probe timeout:
//! no variant may be marked down for it, while a variant whose readiness really hangs still is).

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// A real PNG of `w` x `h` all-zero pixels (`bytes_per_pixel` at `bit_depth`/`color_type`) whose zlib stream is
/// one fully flushed deflate block of a few rows repeated: it decodes to `h * (1 + w * bytes_per_pixel)` bytes
/// from a body about a thousandth of that.
fn png_bomb(w: u32, h: u32, bit_depth: u8, color_type: u8, bytes_per_pixel: usize) -> Vec<u8> {
    const ROWS: u32 = 8;
    assert_eq!(h % ROWS, 0);
    let row = 1 + w as usize * bytes_per_pixel;
    let raw = vec![0u8; row * ROWS as usize];
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let mut block = Vec::with_capacity(raw.len() / 10 + 1024);
    c.compress_vec(&raw, &mut block, flate2::FlushCompress::Full)
        .expect("deflate");
    assert_eq!(c.total_in() as usize, raw.len());
    let mut tail = Vec::with_capacity(64);
    flate2::Compress::new(flate2::Compression::best(), false)
        .compress_vec(&[], &mut tail, flate2::FlushCompress::Finish)
        .expect("final block");
    let total = row as u64 * u64::from(h);
    let adler = ((total % 65521) << 16) | 1; // Adler-32 of all-zero bytes
    let mut zlib = vec![0x78, 0xDA];
    for _ in 0..h / ROWS {
        zlib.extend_from_slice(&block);
    }
    zlib.extend_from_slice(&tail);
    zlib.extend_from_slice(&(adler as u32).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, color_type, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &zlib);
    png_chunk(&mut png, b"IEND", &[]);
    png
}

/// A PNG header claiming `w` x `h` grey pixels with a tiny (invalid) image stream.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &[0x78, 0xDA, 0x03, 0x00]);
    png_chunk(&mut png, b"IEND", &[]);
    png
}

fn truncated_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )
    .expect("encode");
    out.truncate(out.len() / 2);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_from_the_header_within_the_memory_budget() {
    let v0 = fake(fake_spec("v0", 3, 0.6)).await;
    let budget_mib = 64;
    let agg = start_with(
        "bombs",
        &config(&[("v0", &v0)], ""),
        &["--memory-budget-mib", "64", "--max-image-bytes", "4000000"],
    )
    .await;
    let pid = agg.child.id();
    let bombs: Vec<(&str, Vec<u8>)> = vec![
        // 8192 x 8192 RGBA, 16 bits per channel: decodes to 512 MiB.
        ("rgba16-8192", png_bomb(8192, 8192, 16, 6, 8)),
        // 8192 x 8192 grey: 64 MiB decoded, more than this budget's 32 MiB for requests.
        ("grey-8192", png_bomb(8192, 8192, 8, 0, 1)),
        ("header-20000", png_header_only(20000, 20000)),
        ("truncated-jpeg", truncated_jpeg()),
    ];
    // The construction is a valid PNG: a small one decodes.
    let small = image::load_from_memory(&png_bomb(64, 64, 16, 6, 8)).expect("small bomb decodes");
    assert_eq!((small.width(), small.height()), (64, 64));
    for (name, b) in &bombs {
        eprintln!("{name}: {} bytes", b.len());
    }
    let rss_before = proc_kib(pid, "VmRSS");
    let mut times = Vec::new();
    for round in 0..3 {
        let calls = bombs.iter().map(|(name, body)| {
            let url = format!("{}/v1/classify", agg.base);
            let body = body.clone();
            async move {
                let t = Instant::now();
                let r = client().post(url).body(body).send().await.expect("send");
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                (*name, status, v, t.elapsed())
            }
        });
        for (name, status, v, took) in futures::future::join_all(calls).await {
            eprintln!("round {round} {name}: {status} in {took:?}: {}", v["error"]);
            assert!(
                (400..500).contains(&status),
                "{name}: expected a 4xx, got {status} {v}"
            );
            let msg = v["error"].as_str().unwrap_or_default();
            let want = match name {
                "truncated-jpeg" => "truncated",
                "header-20000" => "larger than 8192x8192",
                _ => "MiB",
            };
            assert!(msg.contains(want), "{name}: {msg:?} should say {want:?}");
            // Decoding 512 MiB takes seconds; an answer well under that means nothing was decoded.
            assert!(took < Duration::from_secs(2), "{name} took {took:?}");
            times.push(took);
        }
    }
    let peak = proc_kib(pid, "VmHWM");
    let (p50, max) = p50_max(times);
    eprintln!(
        "bombs: p50 {p50:.1} ms, max {max:.1} ms; RSS before {} KiB, peak {peak} KiB, budget {} KiB",
        rss_before,
        budget_mib * 1024
    );
    assert!(
        peak < budget_mib * 1024,
        "peak RSS {peak} KiB over the {budget_mib} MiB budget"
    );
    // Still serving, and a valid image is classified.
    let ok = image::GrayImage::from_pixel(28, 28, image::Luma([9]));
    let mut png = Vec::new();
    ok.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encode");
    let r = client()
        .post(format!("{}/v1/classify", agg.base))
        .body(png)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
}

/// Opens a connection that sends a request head one byte every `gap`; returns when the server closes it (with
/// the time that took) or after `give_up`.
async fn slow_header(addr: String, gap: Duration, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
    let head =
        b"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    let mut buf = [0u8; 256];
    for b in head.iter().cycle() {
        if started.elapsed() > give_up {
            return None;
        }
        if s.write_all(&[*b]).await.is_err() {
            return Some(started.elapsed());
        }
        // Closed by the server: the read returns 0 (or an error) instead of timing out.
        match tokio::time::timeout(gap, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {
                // A 408 reply followed by a close also counts.
                return Some(started.elapsed());
            }
            Err(_) => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_while_valid_requests_are_served() {
    let v0 = fake(fake_spec("v0", 3, 0.6)).await;
    let agg = start_with(
        "slow",
        &config(&[("v0", &v0)], ""),
        &[
            "--header-read-timeout-ms",
            "1500",
            "--idle-timeout-ms",
            "2000",
        ],
    )
    .await;
    let pid = agg.child.id();
    let addr = agg.base.trim_start_matches("http://").to_string();
    let body = image_request(None);
    let c = client();
    // Warm the client's pool, then the baseline.
    let (st, _) = infer(&agg, &body).await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds_before = open_fds(pid);
    let mut quiet = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        let r = c
            .post(format!("{}/v2/models/fake/infer", agg.base))
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200);
        quiet.push(t.elapsed());
    }

    // The most descriptors the server holds while the hostile clients are there, sampled until they are gone (on a
    // loaded machine they connect over a while, so a fixed window can end before the peak).
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut most = 0;
            while sampling.load(Ordering::SeqCst) {
                most = most.max(open_fds(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        })
    };
    // 300 clients sending their request head one byte every 300 ms, plus 50 that connect and say nothing.
    let slow: Vec<_> = (0..300)
        .map(|_| {
            tokio::spawn(slow_header(
                addr.clone(),
                Duration::from_millis(300),
                Duration::from_secs(20),
            ))
        })
        .collect();
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    let mut loaded = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        let r = c
            .post(format!("{}/v2/models/fake/infer", agg.base))
            .json(&body)
            .send()
            .await
            .expect("send while under slow-client load");
        assert_eq!(r.status().as_u16(), 200);
        loaded.push(t.elapsed());
    }
    let mut closed_after = Vec::new();
    for h in slow {
        let r = h.await.expect("join");
        closed_after.push(r.expect("a slow-header connection was never closed"));
    }
    for mut s in idle {
        let mut b = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection was not closed: {r:?}"
        );
    }
    sampling.store(false, Ordering::SeqCst);
    let fds_loaded = sampler.await.expect("join the descriptor sampler");
    // Give the server a moment to release everything, then compare descriptors.
    let end = Instant::now() + Duration::from_secs(5);
    let mut fds_after = open_fds(pid);
    while fds_after > fds_before + 2 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds_after = open_fds(pid);
    }
    let (q50, _) = p50_max(quiet);
    let (l50, _) = p50_max(loaded);
    let (c50, cmax) = p50_max(closed_after);
    eprintln!(
        "valid requests p50: {q50:.2} ms quiet, {l50:.2} ms with 300 slow + 50 idle connections; \
         slow connections closed after p50 {c50:.0} ms, max {cmax:.0} ms; \
         fds: {fds_before} before, {fds_loaded} loaded, {fds_after} after"
    );
    assert!(
        fds_loaded > fds_before + 250,
        "the slow clients were not connected"
    );
    assert!(
        fds_after <= fds_before + 2,
        "descriptors did not return to baseline: {fds_before} -> {fds_after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_variant_is_ejected_and_readmitted_when_it_answers_again() {
    let v0 = fake(fake_spec("v0", 3, 0.6)).await;
    let hung = fake_spec("v1", 3, 0.5);
    let hang = hung.hang.clone();
    hang.store(true, Ordering::SeqCst);
    let v1 = fake(hung).await;
    let agg = start(
        "hung",
        &config(
            &[("v0", &v0), ("v1", &v1)],
            "deadline_ms: 400\noutlier_failures: 2\noutlier_ejection_ms: 1000\n",
        ),
    )
    .await;
    let body = image_request(None);
    // The first two requests wait for the deadline, then the variant is ejected.
    for _ in 0..2 {
        let t = Instant::now();
        let (st, v) = infer(&agg, &body).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["parameters"]["variants"], json!(["v0"]));
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
    }
    let (_, status) = get_json(&agg, "/v1/status").await;
    assert_eq!(status["variants"][1]["ejected"], json!(true), "{status}");
    // Ejected: answers come in the time of the healthy variant, not the deadline.
    let mut after = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let (st, v) = infer(&agg, &body).await;
        assert_eq!(st, 200);
        assert_eq!(v["parameters"]["variants"], json!(["v0"]));
        assert_eq!(v["parameters"]["degraded"], json!(true));
        after.push(t.elapsed());
    }
    let (p50, max) = p50_max(after);
    eprintln!("while ejected: p50 {p50:.2} ms, max {max:.2} ms (deadline 400 ms)");
    assert!(
        max < 400.0,
        "a request waited for the ejected variant: {max} ms"
    );
    let metrics = client()
        .get(format!("{}/metrics", agg.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("vp_aggregator_variant_ejections_total{variant=\"v1\"} 1"),
        "{metrics}"
    );
    // It recovers: after the ejection period a passed probe re-admits it and it is used again.
    hang.store(false, Ordering::SeqCst);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, v) = infer(&agg, &body).await;
        assert_eq!(st, 200);
        if v["parameters"]["variants"] == json!(["v0", "v1"]) {
            break;
        }
        assert!(
            Instant::now() < end,
            "the recovered variant was never re-admitted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Arc::strong_count(&hang);
}

fn signal(agg: &Aggregator, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &agg.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill {sig} failed");
}

/// The variants the aggregator's `/v1/status` shows as not up.
async fn not_up(agg: &Aggregator) -> Vec<String> {
    let (_, status) = get_json(agg, "/v1/status").await;
    status["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .filter(|v| v["up"] != json!(true))
        .map(|v| v["name"].to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_of_the_aggregator_marks_no_variant_down_but_a_hung_readiness_does() {
    // Readiness answers in 150 ms and probes start every 100 ms after the last one ended, so a probe is in flight
    // 60 % of the time; a stop longer than the probe timeout (1 s: generous, so that a loaded machine does not
    // fail a probe for real) expires that probe with its reply unread. Six rounds: the old prober, which marked
    // a variant down after one timeout, fails this test with probability 1 - 0.4^6.
    let slow_ready = |name: &str, p: f32| common::Fake {
        ready_delay: Duration::from_millis(150),
        ..fake_spec(name, 3, p)
    };
    let v0 = fake(slow_ready("v0", 0.6)).await;
    let spec1 = slow_ready("v1", 0.5);
    let ready_hang = spec1.ready_hang.clone();
    let v1 = fake(spec1).await;
    let agg = start(
        "stall",
        &config(
            &[("v0", &v0), ("v1", &v1)],
            "probe_timeout_ms: 300
",
        ),
    )
    .await;
    let body = image_request(None);
    for round in 0..6 {
        signal(&agg, "-STOP");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        signal(&agg, "-CONT");
        // Long enough for the probe that was cut off, its retry and the next period to finish.
        let end = Instant::now() + Duration::from_millis(600);
        while Instant::now() < end {
            let down = not_up(&agg).await;
            assert!(
                down.is_empty(),
                "round {round}: marked down after a stall of the aggregator: {down:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (st, v) = infer(&agg, &body).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(
            v["parameters"]["variants"],
            json!(["v0", "v1"]),
            "round {round}"
        );
    }
    // A variant whose readiness really hangs fails the probe and its retry, and is marked down.
    ready_hang.store(true, Ordering::SeqCst);
    let end = Instant::now() + Duration::from_secs(10);
    while not_up(&agg).await != vec!["\"v1\"".to_string()] {
        assert!(
            Instant::now() < end,
            "a variant whose readiness hangs was never marked down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, v) = infer(&agg, &body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["parameters"]["variants"], json!(["v0"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_on_reuse_is_retried_not_taken_for_a_dead_variant() {
    let v0 = fake(fake_spec("v0", 3, 0.6)).await;
    let v1 = fake_closing_on_reuse(fake_spec("v1", 3, 0.5)).await;
    // Probes once at start only, so the requests below are the only traffic on v1's connections.
    let agg = start(
        "reuse",
        &config(&[("v0", &v0), ("v1", &v1)], "")
            .replace("probe_interval_ms: 100", "probe_interval_ms: 600000"),
    )
    .await;
    let body = image_request(None);
    for i in 0..6 {
        let (st, v) = infer(&agg, &body).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(
            v["parameters"]["variants"],
            json!(["v0", "v1"]),
            "request {i}: {v}"
        );
    }
    assert!(not_up(&agg).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_longer_than_the_request_timeout_gives_a_degraded_answer_not_a_408() {
    let fast = fake(fake_spec("v0", 3, 0.6)).await;
    let slow = fake(common::Fake {
        delay: Duration::from_secs(5),
        ..fake_spec("v1", 3, 0.5)
    })
    .await;
    let agg = start_with(
        "deadline",
        &config(&[("v0", &fast), ("v1", &slow)], "deadline_ms: 800\n"),
        &["--request-timeout-ms", "300"],
    )
    .await;
    let t = Instant::now();
    let (st, v) = infer(&agg, &image_request(None)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["parameters"]["variants"], json!(["v0"]));
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
}
