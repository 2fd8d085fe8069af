//! `vpctl overload`: load shedding measured. One variant server is driven at twice its saturating load
//! (open-loop: requests arrive at a fixed rate whatever the server does), once with shedding on (the default
//! limits) and once with it off (unbounded in-flight and queue, no memory budget), and the answered requests/s,
//! their p50/p99 latency and the refused/failed counts are compared. The saturating load is measured first in
//! the same run with closed-loop clients.

use crate::CliError;
use crate::procs::{client, find_binary, wait_ready};
use crate::stats::quantile;
use crate::testset::{DEFAULT_DIR, TestSet};
use crate::verify::read_manifest;
use serde::Serialize;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Command;

#[derive(Debug, clap::Args)]
pub struct OverloadArgs {
    /// The family's ensemble.yaml.
    pub manifest: PathBuf,
    /// Variant to load (default: the family's first).
    #[arg(long)]
    pub variant: Option<String>,
    /// Samples per request (above 4 they run on the server's inference worker).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Load as a multiple of the measured saturating throughput.
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    /// A request not answered within this many ms counts as failed (the client gives up).
    #[arg(long, default_value_t = 2000)]
    pub client_timeout_ms: u64,
    /// Folder with the test set (its images are the inputs).
    #[arg(long, default_value = DEFAULT_DIR)]
    pub data_dir: PathBuf,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Closed-loop clients used to measure the saturating load (enough to keep the server busy at all times).
const SATURATION_CLIENTS: usize = 16;

/// One measurement.
#[derive(Debug, Serialize)]
struct Run {
    label: String,
    offered_rps: f64,
    answered_rps: f64,
    answered: usize,
    shed_503: usize,
    failed: usize,
    p50_ms: f64,
    p99_ms: f64,
    server_peak_rss_mib: f64,
}

async fn one(
    http: &reqwest::Client,
    url: &str,
    body: Arc<Vec<u8>>,
    timeout: Duration,
) -> (Option<u16>, Duration) {
    let t = Instant::now();
    let r = tokio::time::timeout(timeout, async {
        let r = http
            .post(url)
            .header("content-type", "application/json")
            .body(body.as_ref().clone())
            .send()
            .await
            .ok()?;
        let st = r.status().as_u16();
        r.bytes().await.ok()?;
        Some(st)
    })
    .await
    .ok()
    .flatten();
    (r, t.elapsed())
}

fn peak_rss_mib(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return f64::NAN };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
        })
        .map_or(f64::NAN, |k| k / 1024.0)
}

struct Server {
    child: tokio::process::Child,
    url: String,
}

async fn start(
    a: &OverloadArgs,
    manifest: &str,
    variant: &str,
    extra: &[&str],
) -> Result<Server, CliError> {
    let port = crate::ports::free_port()?;
    let child = Command::new(find_binary("vp-variant")?)
        .args(["--manifest", manifest, "--variant", variant])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--request-timeout-ms",
            &a.client_timeout_ms.max(1000).saturating_mul(10).to_string(),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CliError::msg(format!("cannot start vp-variant: {e}")))?;
    let url = format!("http://127.0.0.1:{port}");
    if !wait_ready(
        &client()?,
        &format!("{url}/v2/health/ready"),
        Duration::from_secs(60),
    )
    .await
    {
        return Err(CliError::msg("vp-variant did not become ready"));
    }
    Ok(Server { child, url })
}

/// Closed loop: `clients` clients each sending the next request when the last is answered; answers per second.
async fn saturation(
    http: &reqwest::Client,
    url: &str,
    body: Arc<Vec<u8>>,
    clients: usize,
    secs: u64,
) -> f64 {
    let end = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.to_string(), body.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                while Instant::now() < end {
                    if one(&http, &url, body.clone(), Duration::from_secs(30))
                        .await
                        .0
                        == Some(200)
                    {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / secs as f64
}

/// Open loop at `rps` for `secs`.
async fn open_loop(
    a: &OverloadArgs,
    http: &reqwest::Client,
    s: &Server,
    path: &str,
    body: Arc<Vec<u8>>,
    rps: f64,
    label: &str,
) -> Run {
    let url = format!("{}{path}", s.url);
    let timeout = Duration::from_millis(a.client_timeout_ms);
    let period = Duration::from_secs_f64(1.0 / rps.max(1.0));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            one(&http, &url, body, timeout).await
        }));
    }
    let offered = tasks.len();
    let (mut ok, mut shed, mut failed) = (Vec::new(), 0, 0);
    for t in tasks {
        match t.await {
            Ok((Some(200), d)) => ok.push(d.as_secs_f64() * 1e3),
            Ok((Some(503), _)) => shed += 1,
            _ => failed += 1,
        }
    }
    Run {
        label: label.to_string(),
        offered_rps: offered as f64 / a.seconds as f64,
        answered_rps: ok.len() as f64 / a.seconds as f64,
        answered: ok.len(),
        shed_503: shed,
        failed,
        p50_ms: quantile(&ok, 0.5).unwrap_or(f64::NAN),
        p99_ms: quantile(&ok, 0.99).unwrap_or(f64::NAN),
        server_peak_rss_mib: peak_rss_mib(s.child.id()),
    }
}

pub async fn overload(a: OverloadArgs) -> Result<(), CliError> {
    let manifest = std::fs::canonicalize(&a.manifest)
        .map_err(|e| CliError::msg(format!("{}: {e}", a.manifest.display())))?;
    let m = read_manifest(&manifest)?;
    let variant = a
        .variant
        .clone()
        .or_else(|| m.variants.first().map(|v| v.name.clone()))
        .ok_or_else(|| CliError::msg("the family has no variants"))?;
    let set = TestSet::load(&a.data_dir)?;
    let n = a.batch.max(1);
    let data: Vec<u8> = (0..n)
        .flat_map(|i| set.image(i % set.len()).to_vec())
        .collect();
    let body = Arc::new(
        serde_json::to_vec(&serde_json::json!({"inputs": [{"name": "image",
            "shape": [n, 1, 28, 28], "datatype": "UINT8", "data": data}]}))
        .map_err(|e| CliError::msg(e.to_string()))?,
    );
    let path = format!("/v2/models/{variant}/infer");
    let http = client()?;
    let mpath = manifest.display().to_string();

    let on = start(&a, &mpath, &variant, &[]).await?;
    let sat = saturation(
        &http,
        &format!("{}{path}", on.url),
        body.clone(),
        SATURATION_CLIENTS,
        a.seconds.min(5),
    )
    .await;
    if sat <= 0.0 {
        return Err(CliError::msg(
            "no request was answered while measuring the saturating load",
        ));
    }
    let rps = sat * a.factor;
    println!(
        "overload: {variant}, batch {n}, saturating load {sat:.0} requests/s ({SATURATION_CLIENTS} closed-loop clients), offering {rps:.0} requests/s for {} s each; load average {}",
        a.seconds,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let with = open_loop(
        &a,
        &http,
        &on,
        &path,
        body.clone(),
        rps,
        "shedding on (default limits)",
    )
    .await;
    drop(on);
    let off = start(
        &a,
        &mpath,
        &variant,
        &[
            "--max-in-flight",
            "1000000",
            "--max-queue",
            "1000000",
            "--memory-budget-mib",
            "1000000",
        ],
    )
    .await?;
    let without = open_loop(
        &a,
        &http,
        &off,
        &path,
        body,
        rps,
        "shedding off (unbounded)",
    )
    .await;
    drop(off);
    println!(
        "| configuration | offered req/s | answered req/s | p50 ms | p99 ms | 503 | failed (> {} ms or error) | server peak RSS MiB |",
        a.client_timeout_ms
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in [&with, &without] {
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {} | {:.0} |",
            r.label,
            r.offered_rps,
            r.answered_rps,
            r.p50_ms,
            r.p99_ms,
            r.shed_503,
            r.failed,
            r.server_peak_rss_mib
        );
    }
    println!(
        "shedding on vs off: answered {:.2}x, p99 {:.3}x",
        with.answered_rps / without.answered_rps.max(f64::MIN_POSITIVE),
        with.p99_ms / without.p99_ms
    );
    if let Some(p) = &a.json {
        let v = serde_json::json!({"variant": variant, "batch": n, "saturating_rps": sat, "runs": [with, without]});
        std::fs::write(p, serde_json::to_vec_pretty(&v).unwrap_or_default())
            .map_err(|e| CliError::msg(format!("{}: {e}", p.display())))?;
    }
    Ok(())
}
