//! `vpctl bench`: data-plane benchmarks on this machine, every comparison measured in the same run: bare ONNX
//! Runtime `run` vs the variant server (batch 1) over HTTP JSON, HTTP with the binary tensor extension and gRPC,
//! each variant vs the baseline model, the aggregator vs the slowest variant it waits for (over HTTP and over
//! gRPC), a client's own fan-out to all variants over JSON and over gRPC, and bytes on the wire per request and
//! reply.

use crate::CliError;
use crate::ports::free_port;
use crate::procs::{Startup, client, find_binary, wait_started};
use crate::stats::{ms, quantile};
use crate::testset::{DEFAULT_DIR, TestSet};
use crate::verify::read_manifest;
use crate::wire::{GrpcClient, Input, binary_body, grpc_connect, grpc_request, json_body};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use vp_core::oip::VariantWire;
use vp_core::{AggregatorConfig, Manifest, VariantEndpoint};
use vp_infer::Model;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The family's ensemble.yaml.
    pub manifest: PathBuf,
    /// Timed requests per measurement.
    #[arg(long, default_value_t = 1000)]
    pub iterations: usize,
    /// Untimed requests before each measurement.
    #[arg(long, default_value_t = 50)]
    pub warmup: usize,
    /// ONNX Runtime intra-op threads (bare runs and variant servers alike).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// k each variant replies with.
    #[arg(long, default_value_t = 3)]
    pub k: usize,
    /// Folder with the test set (its images are the benchmark inputs).
    #[arg(long, default_value = DEFAULT_DIR)]
    pub data_dir: PathBuf,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Latency summary in seconds.
#[derive(Debug, Clone, Serialize)]
struct Lat {
    p50: f64,
    p90: f64,
    p99: f64,
    mean: f64,
}

fn summarize(v: &[f64]) -> Lat {
    Lat {
        p50: quantile(v, 0.5).unwrap_or(f64::NAN),
        p90: quantile(v, 0.9).unwrap_or(f64::NAN),
        p99: quantile(v, 0.99).unwrap_or(f64::NAN),
        mean: if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        },
    }
}

#[derive(Debug, Serialize)]
struct ModelResult {
    name: String,
    params: u64,
    macs: u64,
    bare_ort: Lat,
    http: Option<Lat>,
    request_bytes: Option<usize>,
    reply_bytes: Option<usize>,
    /// HTTP with the binary tensor extension (binary request and reply).
    http_binary: Lat,
    grpc: Lat,
    grpc_request_bytes: usize,
    grpc_reply_bytes: usize,
}

#[derive(Debug, Serialize)]
struct Results {
    iterations: usize,
    threads: usize,
    k: usize,
    cores: usize,
    load_average: String,
    models: Vec<ModelResult>,
    aggregator_all: Lat,
    aggregator_all_grpc: Lat,
    /// The same aggregator config with `variant_wire: json` (the hop to the variants as JSON), interleaved.
    aggregator_all_json_hop: Lat,
    /// `GET /v2` (server metadata) on the baseline's server with the same client: the loopback HTTP floor.
    http_floor: Lat,
    /// The baseline server's own means over its JSON, binary and gRPC measurement (from its `/metrics`).
    baseline_inside_server: ServerMeans,
    direct_fanout_all: Lat,
    direct_fanout_all_grpc: Lat,
    aggregator_all_variants: usize,
    aggregator_single: Lat,
    aggregator_single_variant: String,
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.start_kill();
        }
    }
}

/// Waits for a started server (`what`) to become ready; an error names it and says whether it timed out or exited.
async fn started(
    http: &reqwest::Client,
    url: &str,
    child: &mut Child,
    timeout: Duration,
    what: &str,
) -> Result<(), CliError> {
    match wait_started(http, url, child, timeout).await {
        Startup::Ready => Ok(()),
        Startup::TimedOut => Err(CliError::msg(format!(
            "{what} did not become ready within {} s",
            timeout.as_secs()
        ))),
        Startup::Exited(status) => Err(CliError::msg(format!(
            "{what} exited during start-up ({status}); its stderr is above"
        ))),
    }
}

fn bare(
    m: &Manifest,
    dir: &Path,
    name: &str,
    set: &TestSet,
    a: &BenchArgs,
) -> Result<Lat, CliError> {
    let entry = m
        .model(name)
        .ok_or_else(|| CliError::msg(format!("no model {name}")))?;
    let s = &m.input.shape;
    let mut model = Model::load(
        &dir.join(&entry.file),
        a.threads,
        &m.input.name,
        [s[0], s[1], s[2]],
        &m.output.name,
        m.classes(),
    )
    .map_err(|e| CliError::msg(e.to_string()))?;
    let mut times = Vec::with_capacity(a.iterations);
    for i in 0..a.warmup + a.iterations {
        let img = set.image(i % set.len());
        let t = Instant::now();
        model
            .run(img, 1)
            .map_err(|e| CliError::msg(e.to_string()))?;
        if i >= a.warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(summarize(&times))
}

/// How a request travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Json,
    Binary,
    Grpc,
}

/// One served model: its HTTP infer URL, its gRPC client, its name and input.
#[derive(Clone)]
struct Target {
    url: String,
    grpc: GrpcClient,
    model: String,
    input: Input,
}

/// One batch-1 request over `wire`; the bytes of its body and of the reply body.
async fn call(
    http: &reqwest::Client,
    t: &Target,
    wire: Wire,
    img: &[u8],
    k: usize,
) -> Result<(usize, usize), CliError> {
    let url = &t.url;
    let (body, header) = match wire {
        Wire::Json => (json_body(&t.input, 1, img, Some(k)), None),
        Wire::Binary => {
            let (b, h) = binary_body(&t.input, 1, img, Some(k));
            (b, Some(h))
        }
        Wire::Grpc => {
            let req = grpc_request(&t.model, &t.input, 1, img.to_vec(), Some(k));
            let sent = prost::Message::encoded_len(&req);
            let r = t
                .grpc
                .clone()
                .model_infer(req)
                .await
                .map_err(|e| CliError::msg(format!("{} over gRPC: {e}", t.model)))?;
            return Ok((sent, prost::Message::encoded_len(r.get_ref())));
        }
    };
    let sent = body.len();
    let mut req = http.post(url).body(body);
    req = match header {
        None => req.header("content-type", "application/json"),
        Some(h) => req
            .header("content-type", "application/octet-stream")
            .header("inference-header-content-length", h),
    };
    let r = req
        .send()
        .await
        .map_err(|e| CliError::msg(format!("{url}: {e}")))?;
    let status = r.status();
    let bytes = r
        .bytes()
        .await
        .map_err(|e| CliError::msg(format!("{url}: {e}")))?;
    if !status.is_success() {
        return Err(CliError::msg(format!(
            "{url}: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    Ok((sent, bytes.len()))
}

/// Sequential batch-1 requests over `wire`; returns latencies and the body sizes of the last request and reply.
async fn wire_lat(
    http: &reqwest::Client,
    t: &Target,
    wire: Wire,
    set: &TestSet,
    a: &BenchArgs,
) -> Result<(Lat, usize, usize), CliError> {
    let mut r = interleaved(http, t, &[wire], set, a).await?;
    r.pop().ok_or_else(|| CliError::msg("no measurement"))
}

/// Sequential batch-1 requests over each of `wires` in turn (request i over every wire, the first wire rotating,
/// so each wire sees the same images under the same load); per wire: latencies and the body sizes of the last
/// request and reply.
async fn interleaved(
    http: &reqwest::Client,
    t: &Target,
    wires: &[Wire],
    set: &TestSet,
    a: &BenchArgs,
) -> Result<Vec<(Lat, usize, usize)>, CliError> {
    let pairs: Vec<(&Target, Wire)> = wires.iter().map(|&w| (t, w)).collect();
    interleaved_pairs(http, &pairs, set, a).await
}

/// As [`interleaved`], over (server, wire) pairs: request i goes to every pair, the first pair rotating.
async fn interleaved_pairs(
    http: &reqwest::Client,
    pairs: &[(&Target, Wire)],
    set: &TestSet,
    a: &BenchArgs,
) -> Result<Vec<(Lat, usize, usize)>, CliError> {
    let mut times = vec![Vec::with_capacity(a.iterations); pairs.len()];
    let mut sizes = vec![(0, 0); pairs.len()];
    for i in 0..a.warmup + a.iterations {
        let img = set.image(i % set.len());
        for j in 0..pairs.len() {
            let w = (i + j) % pairs.len();
            let (t, wire) = pairs[w];
            let t0 = Instant::now();
            sizes[w] = call(http, t, wire, img, a.k).await?;
            if i >= a.warmup {
                times[w].push(t0.elapsed().as_secs_f64());
            }
        }
    }
    Ok(times
        .iter()
        .zip(sizes)
        .map(|(t, (rq, rp))| (summarize(t), rq, rp))
        .collect())
}

/// JSON, binary and gRPC, interleaved.
async fn three(
    http: &reqwest::Client,
    t: &Target,
    set: &TestSet,
    a: &BenchArgs,
) -> Result<[(Lat, usize, usize); 3], CliError> {
    let r = interleaved(http, t, &[Wire::Json, Wire::Binary, Wire::Grpc], set, a).await?;
    r.try_into()
        .map_err(|_| CliError::msg("expected three measurements"))
}

/// Batch-1 requests sent to all `targets` at once, over each of `wires` in turn (interleaved as in
/// [`interleaved`]); per wire, the time until the last reply.
async fn fanout_lat(
    http: &reqwest::Client,
    targets: &[Target],
    wires: &[Wire],
    set: &TestSet,
    a: &BenchArgs,
) -> Result<Vec<Lat>, CliError> {
    let mut times = vec![Vec::with_capacity(a.iterations); wires.len()];
    for i in 0..a.warmup + a.iterations {
        let img = set.image(i % set.len());
        for j in 0..wires.len() {
            let w = (i + j) % wires.len();
            let t0 = Instant::now();
            let calls = targets.iter().map(|t| call(http, t, wires[w], img, a.k));
            for r in futures::future::join_all(calls).await {
                r?;
            }
            if i >= a.warmup {
                times[w].push(t0.elapsed().as_secs_f64());
            }
        }
    }
    Ok(times.iter().map(|t| summarize(t)).collect())
}

/// A variant server's own mean timings over a stretch of requests, from its `/metrics`.
#[derive(Debug, Clone, Copy, Serialize)]
struct ServerMeans {
    /// Mean time of one inference inside the server (`vp_variant_inference_duration_seconds`).
    inference: f64,
    /// Mean time from the request's arrival to its reply (`vp_variant_request_duration_seconds`, ok).
    request: f64,
}

/// Running sums and counts of a server's inference and request durations, as one scrape found them.
struct ServerSums {
    inference: (f64, f64),
    request: (f64, f64),
}

impl ServerSums {
    /// The means over the requests between `before` and this scrape.
    fn means_since(&self, before: &ServerSums) -> ServerMeans {
        let mean = |(s1, n1): (f64, f64), (s0, n0): (f64, f64)| {
            if n1 > n0 {
                (s1 - s0) / (n1 - n0)
            } else {
                f64::NAN
            }
        };
        ServerMeans {
            inference: mean(self.inference, before.inference),
            request: mean(self.request, before.request),
        }
    }
}

/// Scrapes the inference and request duration sums and counts from a variant server's `/metrics`.
async fn server_sums(http: &reqwest::Client, base_url: &str) -> Result<ServerSums, CliError> {
    let url = format!("{base_url}/metrics");
    let text = http
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| CliError::msg(format!("{url}: {e}")))?
        .text()
        .await
        .map_err(|e| CliError::msg(format!("{url}: {e}")))?;
    // A labelled series appears with its first observation: absent means 0 so far.
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let series = |name: &str, labels: &str| {
        (
            value(&format!("{name}_sum{labels} ")),
            value(&format!("{name}_count{labels} ")),
        )
    };
    Ok(ServerSums {
        inference: series("vp_variant_inference_duration_seconds", ""),
        request: series("vp_variant_request_duration_seconds", "{outcome=\"ok\"}"),
    })
}

/// Sequential `GET url` (server metadata: no inference, no body to parse) with the benchmark's client.
async fn http_floor(http: &reqwest::Client, url: &str, a: &BenchArgs) -> Result<Lat, CliError> {
    let mut times = Vec::with_capacity(a.iterations);
    for i in 0..a.warmup + a.iterations {
        let t0 = Instant::now();
        let r = http
            .get(url)
            .send()
            .await
            .map_err(|e| CliError::msg(format!("{url}: {e}")))?;
        let status = r.status();
        r.bytes()
            .await
            .map_err(|e| CliError::msg(format!("{url}: {e}")))?;
        if !status.is_success() {
            return Err(CliError::msg(format!("{url}: HTTP {status}")));
        }
        if i >= a.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(summarize(&times))
}

fn spawn(program: &Path, args: &[String]) -> Result<Child, CliError> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CliError::msg(format!("cannot start {}: {e}", program.display())))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub async fn bench(a: BenchArgs) -> Result<(), CliError> {
    let manifest_path = std::fs::canonicalize(&a.manifest)
        .map_err(|e| CliError::msg(format!("{}: {e}", a.manifest.display())))?;
    let m = read_manifest(&manifest_path)?;
    let dir = manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let set = TestSet::load(&a.data_dir)?;
    vp_core::validate_k(a.k as i64, m.classes()).map_err(|e| CliError::msg(e.to_string()))?;
    let http = client()?;
    let variant_bin = find_binary("vp-variant")?;
    let mut procs = Procs(Vec::new());
    let mut endpoints = Vec::new();
    let mut grpc_addrs = Vec::new();
    for v in m.variants.iter().chain(std::iter::once(&m.baseline)) {
        let port = free_port()?;
        let grpc = format!("127.0.0.1:{}", free_port()?);
        procs.0.push(spawn(
            &variant_bin,
            &[
                "--manifest".into(),
                manifest_path.display().to_string(),
                "--variant".into(),
                v.name.clone(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--grpc-listen".into(),
                grpc.clone(),
                "--threads".into(),
                a.threads.to_string(),
            ],
        )?);
        grpc_addrs.push(grpc);
        endpoints.push(VariantEndpoint {
            name: v.name.clone(),
            url: format!("http://127.0.0.1:{port}"),
        });
    }
    for (e, child) in endpoints.iter().zip(procs.0.iter_mut()) {
        let url = format!("{}/v2/health/ready", e.url);
        started(&http, &url, child, Duration::from_secs(60), &e.name).await?;
    }
    let s = &m.input.shape;
    let input = Input {
        name: m.input.name.clone(),
        chw: [s[0], s[1], s[2]],
    };
    let mut targets = Vec::new();
    for ((v, e), g) in m
        .variants
        .iter()
        .chain(std::iter::once(&m.baseline))
        .zip(&endpoints)
        .zip(&grpc_addrs)
    {
        targets.push(Target {
            url: format!("{}/v2/models/{}/infer", e.url, v.name),
            grpc: grpc_connect(g).await?,
            model: v.name.clone(),
            input: input.clone(),
        });
    }
    println!(
        "benchmark: {} iterations after {} warm-up, batch 1, {} ORT thread(s), k = {}, load average {}",
        a.iterations,
        a.warmup,
        a.threads,
        a.k,
        load_average()
    );
    let mut models = Vec::new();
    // The aggregator gets the variants only.
    let base_url = endpoints
        .pop()
        .map(|e| e.url)
        .ok_or_else(|| CliError::msg("no baseline endpoint"))?;
    for (v, t) in m.variants.iter().zip(&targets) {
        let b = bare(&m, &dir, &v.name, &set, &a)?;
        let [(h, rq, rp), (hb, _, _), (g, grq, grp)] = three(&http, t, &set, &a).await?;
        models.push(ModelResult {
            name: v.name.clone(),
            params: v.params,
            macs: v.macs,
            bare_ort: b,
            http: Some(h),
            request_bytes: Some(rq),
            reply_bytes: Some(rp),
            http_binary: hb,
            grpc: g,
            grpc_request_bytes: grq,
            grpc_reply_bytes: grp,
        });
    }
    let base = bare(&m, &dir, &m.baseline.name, &set, &a)?;
    let base_t = targets
        .pop()
        .ok_or_else(|| CliError::msg("no baseline target"))?;
    let before = server_sums(&http, &base_url).await?;
    let [(bh, brq, brp), (bhb, _, _), (bg, bgrq, bgrp)] = three(&http, &base_t, &set, &a).await?;
    let inside = server_sums(&http, &base_url).await?.means_since(&before);
    models.push(ModelResult {
        name: m.baseline.name.clone(),
        params: m.baseline.params,
        macs: m.baseline.macs,
        bare_ort: base.clone(),
        http: Some(bh),
        request_bytes: Some(brq),
        reply_bytes: Some(brp),
        http_binary: bhb,
        grpc: bg,
        grpc_request_bytes: bgrq,
        grpc_reply_bytes: bgrp,
    });
    // The floor under every HTTP number above: the same client and server, a request with no inference.
    let floor = http_floor(&http, &format!("{}/v2", base_url), &a).await?;
    // The same fan-out the aggregator does, done by this client: all variants at once, until the last reply.
    let mut fan = fanout_lat(&http, &targets, &[Wire::Json, Wire::Grpc], &set, &a)
        .await?
        .into_iter();
    let (direct_all, direct_all_grpc) = match (fan.next(), fan.next()) {
        (Some(j), Some(g)) => (j, g),
        _ => return Err(CliError::msg("no fan-out measurement")),
    };

    // The aggregator over all variants (binary hop to its variants, the default), interleaved with a second
    // aggregator that sends JSON to the same variants; then (hot-reloaded) over the slowest variant alone.
    let state = std::env::temp_dir().join(format!("vpctl-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state)
        .map_err(|e| CliError::msg(format!("{}: {e}", state.display())))?;
    let config_path = state.join("aggregator.yaml");
    let write_config = |path: &Path,
                        eps: Vec<VariantEndpoint>,
                        variant_wire: VariantWire|
     -> Result<(), CliError> {
        let c = AggregatorConfig {
            schema_version: 1,
            manifest: manifest_path.clone(),
            model_name: None,
            top_k: a.k,
            deadline_ms: 2000,
            min_variants: 1,
            combine: Default::default(),
            weights: Default::default(),
            probe_interval_ms: 500,
            probe_timeout_ms: 300,
            outlier_failures: 3,
            outlier_ejection_ms: 5_000,
            variant_wire,
            variants: eps,
        };
        let y = serde_yaml::to_string(&c).map_err(|e| CliError::msg(e.to_string()))?;
        std::fs::write(path, y).map_err(|e| CliError::msg(format!("{}: {e}", path.display())))
    };
    write_config(&config_path, endpoints.clone(), VariantWire::Binary)?;
    let json_hop_path = state.join("aggregator-json-hop.yaml");
    write_config(&json_hop_path, endpoints.clone(), VariantWire::Json)?;
    let mut aggs = Vec::new();
    for path in [&config_path, &json_hop_path] {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let grpc = format!("127.0.0.1:{}", free_port()?);
        procs.0.push(spawn(
            &find_binary("vp-aggregator")?,
            &[
                "--config".into(),
                path.display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--grpc-listen".into(),
                grpc.clone(),
            ],
        )?);
        let child = procs
            .0
            .last_mut()
            .ok_or_else(|| CliError::msg("the aggregator was not started"))?;
        let ready = format!("{url}/v2/health/ready");
        started(&http, &ready, child, Duration::from_secs(30), "aggregator").await?;
        aggs.push((
            url.clone(),
            Target {
                url: format!("{url}/v2/models/{}/infer", m.family),
                grpc: grpc_connect(&grpc).await?,
                model: m.family.clone(),
                input: input.clone(),
            },
        ));
    }
    let (agg_url, agg) = &aggs[0];
    let json_hop = &aggs[1].1;
    let mut all = interleaved_pairs(
        &http,
        &[(agg, Wire::Json), (agg, Wire::Grpc), (json_hop, Wire::Json)],
        &set,
        &a,
    )
    .await?
    .into_iter()
    .map(|(l, _, _)| l);
    let (agg_all, agg_all_grpc, agg_all_json_hop) = match (all.next(), all.next(), all.next()) {
        (Some(j), Some(g), Some(h)) => (j, g, h),
        _ => return Err(CliError::msg("no aggregator measurement")),
    };
    let slowest = models[..m.variants.len()]
        .iter()
        .max_by(|x, y| {
            let (px, py) = (
                x.http.as_ref().map(|l| l.p50),
                y.http.as_ref().map(|l| l.p50),
            );
            px.partial_cmp(&py).unwrap_or(std::cmp::Ordering::Equal)
        })
        .map(|r| r.name.clone())
        .unwrap_or_default();
    write_config(
        &config_path,
        endpoints
            .iter()
            .filter(|e| e.name == slowest)
            .cloned()
            .collect(),
        VariantWire::Binary,
    )?;
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let st: serde_json::Value = http
            .get(format!("{agg_url}/v1/status"))
            .send()
            .await
            .map_err(|e| CliError::msg(e.to_string()))?
            .json()
            .await
            .map_err(|e| CliError::msg(e.to_string()))?;
        if st["variants"].as_array().map(Vec::len) == Some(1) {
            break;
        }
        if Instant::now() > end {
            return Err(CliError::msg("aggregator did not reload its config"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (agg_single, _, _) = wire_lat(&http, agg, Wire::Json, &set, &a).await?;
    // Re-measure the slowest variant directly right after, for the overhead comparison in the same conditions.
    let slow_t = targets
        .iter()
        .find(|t| t.model == slowest)
        .ok_or_else(|| CliError::msg("slowest variant not found"))?;
    let (slow_again, _, _) = wire_lat(&http, slow_t, Wire::Json, &set, &a).await?;
    let _ = std::fs::remove_dir_all(&state);
    drop(procs);

    println!();
    println!(
        "{:<12} {:>9} {:>11} {:>12} {:>12} {:>10} {:>12} {:>10} {:>10}",
        "model",
        "params",
        "MACs",
        "ORT p50 ms",
        "HTTP p50 ms",
        "HTTP/ORT",
        "vs baseline",
        "req bytes",
        "reply B"
    );
    for r in &models {
        let h = r.http.as_ref().map(|l| l.p50);
        println!(
            "{:<12} {:>9} {:>11} {:>12} {:>12} {:>10} {:>12} {:>10} {:>10}",
            r.name,
            r.params,
            r.macs,
            ms(Some(r.bare_ort.p50)),
            ms(h),
            h.map(|x| format!("{:.2}x", x / r.bare_ort.p50))
                .unwrap_or_else(|| "-".into()),
            format!("{:.2}x", base.p50 / r.bare_ort.p50),
            r.request_bytes
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into()),
            r.reply_bytes
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
    println!();
    println!(
        "{:<12} {:>10} {:>14} {:>16} {:>14} {:>16}",
        "model",
        "ORT p50 ms",
        "JSON p50 (xORT)",
        "binary p50 (xORT)",
        "gRPC p50 (xORT)",
        "gRPC req/reply B"
    );
    for r in &models {
        let x = |l: f64| format!("{} ({:.2}x)", ms(Some(l)), l / r.bare_ort.p50);
        println!(
            "{:<12} {:>10} {:>14} {:>16} {:>14} {:>16}",
            r.name,
            ms(Some(r.bare_ort.p50)),
            r.http.as_ref().map(|l| x(l.p50)).unwrap_or_default(),
            x(r.http_binary.p50),
            x(r.grpc.p50),
            format!("{}/{}", r.grpc_request_bytes, r.grpc_reply_bytes)
        );
    }
    let slow_p50 = models
        .iter()
        .find(|r| r.name == slowest)
        .and_then(|r| r.http.as_ref())
        .map(|l| l.p50)
        .unwrap_or(f64::NAN);
    println!();
    println!(
        "aggregator over {} variants: p50 {} ms (p90 {}); slowest variant alone ({slowest}) p50 {} ms: {:+.3} ms",
        m.variants.len(),
        ms(Some(agg_all.p50)),
        ms(Some(agg_all.p90)),
        ms(Some(slow_p50)),
        (agg_all.p50 - slow_p50) * 1000.0
    );
    println!(
        "all {} variants asked at once by this client, until the last reply: p50 {} ms; aggregator {:+.3} ms over that",
        m.variants.len(),
        ms(Some(direct_all.p50)),
        (agg_all.p50 - direct_all.p50) * 1000.0
    );
    println!(
        "aggregator over {slowest} alone: p50 {} ms; {slowest} direct p50 {} ms; aggregator overhead {:+.3} ms",
        ms(Some(agg_single.p50)),
        ms(Some(slow_again.p50)),
        (agg_single.p50 - slow_again.p50) * 1000.0
    );
    println!(
        "over gRPC: aggregator over {} variants p50 {} ms ({:.2}x its HTTP JSON p50); all variants asked at once by \
         this client p50 {} ms ({:.2}x the JSON fan-out)",
        m.variants.len(),
        ms(Some(agg_all_grpc.p50)),
        agg_all_grpc.p50 / agg_all.p50,
        ms(Some(direct_all_grpc.p50)),
        direct_all_grpc.p50 / direct_all.p50
    );
    println!(
        "hop to the variants: binary extension p50 {} ms, JSON p50 {} ms (binary {:.2}x JSON), same variants, \
         interleaved",
        ms(Some(agg_all.p50)),
        ms(Some(agg_all_json_hop.p50)),
        agg_all.p50 / agg_all_json_hop.p50
    );
    println!(
        "loopback HTTP floor (GET /v2 server metadata, same client and server, no inference): p50 {} ms; the baseline \
         at that floor over its bare ORT p50 would be {:.2}x",
        ms(Some(floor.p50)),
        (base.p50 + floor.p50) / base.p50
    );
    println!(
        "baseline inside its server (means over its JSON, binary and gRPC requests): inference {} ms, request \
         handling {} ms; bare ORT loop mean {} ms: the same model runs {:.2}x slower between requests than \
         back to back",
        ms(Some(inside.inference)),
        ms(Some(inside.request)),
        ms(Some(base.mean)),
        inside.inference / base.mean
    );
    println!("load average after: {}", load_average());
    if let Some(p) = &a.json {
        let r = Results {
            iterations: a.iterations,
            threads: a.threads,
            k: a.k,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            load_average: load_average(),
            models,
            aggregator_all: agg_all,
            aggregator_all_grpc: agg_all_grpc,
            aggregator_all_json_hop: agg_all_json_hop,
            http_floor: floor.clone(),
            baseline_inside_server: inside,
            direct_fanout_all: direct_all,
            direct_fanout_all_grpc: direct_all_grpc,
            aggregator_all_variants: m.variants.len(),
            aggregator_single: agg_single,
            aggregator_single_variant: slowest,
        };
        let text = serde_json::to_string_pretty(&r).map_err(|e| CliError::msg(e.to_string()))?;
        std::fs::write(p, text).map_err(|e| CliError::msg(format!("{}: {e}", p.display())))?;
    }
    Ok(())
}
