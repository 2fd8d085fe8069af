//! `vpctl eval`: streams the test set through the running ensemble and reports accuracy, latency percentiles and
//! availability, with `--kill v1@30%` / `--revive v1@70%` to take variants down and back at chosen moments, and a
//! per-interval table of accuracy against the variants that answered. Requests go over OIP REST (JSON) or, with
//! `--protocol grpc`, over the aggregator's OIP gRPC endpoint.

use crate::CliError;
use crate::classify::aggregator_url;
use crate::runstate::{RunState, set_hold};
use crate::stats::{ms, quantile};
use crate::testset::{DEFAULT_DIR, TestSet};
use crate::wire::{GrpcClient, Input, Protocol, grpc_connect, grpc_i64, grpc_param, grpc_request};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Aggregator base URL; default: the ensemble started by `vpctl run`.
    #[arg(long)]
    pub url: Option<String>,
    /// State folder of `vpctl run` (to find the aggregator and the variant processes).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub data_dir: PathBuf,
    /// Evaluate only the first N test samples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Kill a variant (SIGKILL, kept down) when the run reaches a point: NAME@PERCENT% or NAME@SAMPLE. Repeatable.
    #[arg(long = "kill", value_parser = parse_event)]
    pub kills: Vec<Event>,
    /// Let a killed variant restart at a point: NAME@PERCENT% or NAME@SAMPLE. Repeatable.
    #[arg(long = "revive", value_parser = parse_event)]
    pub revives: Vec<Event>,
    /// Rows of the per-interval table.
    #[arg(long, default_value_t = 10)]
    pub intervals: usize,
    /// k each variant replies with (default: the aggregator's).
    #[arg(long)]
    pub k: Option<usize>,
    /// Fail (exit 1) when fewer than this fraction of requests got an answer.
    #[arg(long, default_value_t = 0.0)]
    pub min_availability: f64,
    /// Protocol of the infer requests (status and metadata are read over HTTP either way).
    #[arg(long, value_enum, default_value = "http")]
    pub protocol: Protocol,
    /// The aggregator's gRPC endpoint (host:port) for --protocol grpc; default: the ensemble started by
    /// `vpctl run`.
    #[arg(long)]
    pub grpc: Option<String>,
}

/// When an event happens.
#[derive(Debug, Clone, PartialEq)]
pub enum At {
    Percent(f64),
    Sample(usize),
}

/// A kill or revive of one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub variant: String,
    pub at: At,
}

/// Parses `NAME@30%` or `NAME@3000`.
pub fn parse_event(s: &str) -> Result<Event, String> {
    let (name, at) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?}: expected NAME@PERCENT% or NAME@SAMPLE, e.g. v1@30%"))?;
    if name.is_empty() {
        return Err(format!("{s:?}: missing variant name"));
    }
    let at = if let Some(p) = at.strip_suffix('%') {
        let v: f64 = p
            .parse()
            .map_err(|_| format!("{s:?}: {p:?} is not a number"))?;
        if !(0.0..=100.0).contains(&v) {
            return Err(format!("{s:?}: percentage must be between 0 and 100"));
        }
        At::Percent(v)
    } else {
        At::Sample(
            at.parse()
                .map_err(|_| format!("{s:?}: {at:?} is not a sample index"))?,
        )
    };
    Ok(Event {
        variant: name.to_string(),
        at,
    })
}

impl At {
    /// Sample index at which the event fires in a run of `n` samples.
    fn index(&self, n: usize) -> usize {
        match self {
            At::Percent(p) => ((p / 100.0) * n as f64).round() as usize,
            At::Sample(i) => *i,
        }
        .min(n)
    }
}

/// The result of one request.
#[derive(Debug, Clone)]
struct Outcome {
    latency: f64,
    answer: Result<Answered, String>,
}

#[derive(Debug, Clone)]
struct Answered {
    correct: bool,
    variants: Vec<String>,
    expected_accuracy: Option<f64>,
}

/// A scheduled action on the ensemble.
#[derive(Debug, Clone)]
struct Action {
    index: usize,
    kill: bool,
    variant: String,
}

fn apply(action: &Action, dir: &std::path::Path, log: &mut Vec<String>) -> Result<(), CliError> {
    if action.kill {
        set_hold(dir, &action.variant, true)?;
        let state = RunState::read(dir)?;
        let proc = state
            .variants
            .iter()
            .find(|p| p.name == action.variant)
            .ok_or_else(|| {
                CliError::msg(format!(
                    "the running ensemble has no variant {:?}",
                    action.variant
                ))
            })?;
        if let Some(pid) = proc.pid {
            crate::procs::signal(pid, nix::sys::signal::Signal::SIGKILL)?;
        }
        let pid = proc
            .pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "not running".into());
        log.push(format!(
            "sample {:>6}: killed {} (pid {pid})",
            action.index, action.variant
        ));
    } else {
        set_hold(dir, &action.variant, false)?;
        log.push(format!(
            "sample {:>6}: released {} (vpctl run restarts it)",
            action.index, action.variant
        ));
    }
    Ok(())
}

pub async fn eval(a: EvalArgs) -> Result<(), CliError> {
    let url = aggregator_url(&a.url, &a.state_dir)?;
    let dir = a
        .state_dir
        .clone()
        .unwrap_or_else(crate::runstate::default_dir);
    let set = TestSet::load(&a.data_dir)?;
    let n = a.limit.unwrap_or(set.len()).min(set.len());
    if n == 0 {
        return Err(CliError::msg(
            "nothing to evaluate (--limit 0 or an empty test set)",
        ));
    }
    let http = crate::procs::client()?;
    let status: serde_json::Value = http
        .get(format!("{url}/v1/status"))
        .send()
        .await
        .map_err(|e| CliError::msg(format!("cannot reach the aggregator at {url}: {e}")))?
        .json()
        .await
        .map_err(|e| CliError::msg(format!("unreadable /v1/status from {url}: {e}")))?;
    let model = status["model_name"]
        .as_str()
        .ok_or_else(|| CliError::msg(format!("{url}/v1/status has no model_name")))?
        .to_string();
    let mut actions: Vec<Action> = a
        .kills
        .iter()
        .map(|e| (e, true))
        .chain(a.revives.iter().map(|e| (e, false)))
        .map(|(e, kill)| Action {
            index: e.at.index(n),
            kill,
            variant: e.variant.clone(),
        })
        .collect();
    actions.sort_by_key(|x| (x.index, !x.kill));
    if !actions.is_empty() {
        let state = RunState::read(&dir)?;
        for act in &actions {
            if !state.variants.iter().any(|p| p.name == act.variant) {
                let names: Vec<&str> = state.variants.iter().map(|p| p.name.as_str()).collect();
                return Err(CliError::msg(format!(
                    "--kill/--revive: the running ensemble has no variant {:?} (it has {})",
                    act.variant,
                    names.join(", ")
                )));
            }
        }
    }
    let infer_url = format!("{url}/v2/models/{model}/infer");
    let grpc = match a.protocol {
        Protocol::Http => None,
        Protocol::Grpc => {
            let addr = match &a.grpc {
                Some(g) => g.clone(),
                None => RunState::read(&dir)?.aggregator.grpc.ok_or_else(|| {
                    CliError::msg(
                        "the running ensemble has no gRPC endpoint; pass --grpc HOST:PORT",
                    )
                })?,
            };
            Some((grpc_connect(&addr).await?, addr))
        }
    };
    let target = grpc
        .as_ref()
        .map_or(url.clone(), |(_, g)| format!("{g} (gRPC)"));
    println!(
        "evaluating {n} test samples against {target} (model {model}, {} in flight)",
        a.concurrency.max(1)
    );
    let input = Input {
        name: "image".into(),
        chw: [set.channels, set.rows, set.cols],
    };

    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut log = Vec::new();
    let mut next_action = 0;
    let mut pending_error: Option<CliError> = None;
    let started = Instant::now();
    let mut results: Vec<(usize, Outcome)> = Vec::with_capacity(n);
    {
        let mut stream = futures::stream::iter(0..n)
            .map(|i| {
                while next_action < actions.len() && actions[next_action].index <= i {
                    if let Err(e) = apply(&actions[next_action], &dir, &mut log) {
                        pending_error.get_or_insert(e);
                    }
                    next_action += 1;
                }
                let label = set.labels[i];
                let image = set.image(i);
                let call = match &grpc {
                    Some((client, _)) => Call::Grpc(
                        client.clone(),
                        Box::new(grpc_request(&model, &input, 1, image.to_vec(), a.k)),
                    ),
                    None => Call::Http(
                        http.clone(),
                        infer_url.clone(),
                        crate::wire::json_body(&input, 1, image, a.k),
                    ),
                };
                async move { (i, call.send(label).await) }
            })
            .buffered(a.concurrency.max(1));
        while let Some(r) = stream.next().await {
            bar.inc(1);
            results.push(r);
        }
    }
    bar.finish_and_clear();
    let wall = started.elapsed();
    // Events scheduled at the very end, then release everything this run held down.
    for act in &actions[next_action..] {
        apply(act, &dir, &mut log)?;
    }
    for act in actions.iter().filter(|x| x.kill) {
        set_hold(&dir, &act.variant, false)?;
    }
    if let Some(e) = pending_error {
        return Err(e);
    }
    results.sort_by_key(|(i, _)| *i);
    report(
        &results,
        &log,
        a.intervals.max(1),
        n,
        wall,
        a.min_availability,
    )
}

/// One request, ready to send.
enum Call {
    Http(reqwest::Client, String, Vec<u8>),
    Grpc(GrpcClient, Box<vp_server::grpc::proto::ModelInferRequest>),
}

impl Call {
    async fn send(self, label: u8) -> Outcome {
        let t = Instant::now();
        let answer = match self {
            Call::Http(http, url, body) => send_http(&http, &url, body, label).await,
            Call::Grpc(mut client, req) => {
                let mut req = tonic::Request::new(*req);
                req.set_timeout(Duration::from_secs(30));
                match client.model_infer(req).await {
                    Err(e) => Err(format!("gRPC {:?}: {}", e.code(), e.message())),
                    Ok(r) => grpc_answer(r.get_ref(), label),
                }
            }
        };
        Outcome {
            latency: t.elapsed().as_secs_f64(),
            answer,
        }
    }
}

async fn send_http(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    label: u8,
) -> Result<Answered, String> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(30))
        .body(body)
        .send()
        .await;
    match r {
        Err(e) => Err(format!("request failed: {e}")),
        Ok(resp) => {
            let status = resp.status();
            match resp.json::<serde_json::Value>().await {
                Err(e) => Err(format!("HTTP {status}, unreadable body: {e}")),
                Ok(v) if !status.is_success() => Err(format!(
                    "HTTP {status}: {}",
                    v["error"].as_str().unwrap_or("")
                )),
                Ok(v) => parse_answer(&v, label),
            }
        }
    }
}

/// The aggregator's gRPC answer: the class output and the reply parameters, as [`parse_answer`] reads JSON.
fn grpc_answer(
    r: &vp_server::grpc::proto::ModelInferResponse,
    label: u8,
) -> Result<Answered, String> {
    let class = grpc_i64(r, "class")
        .and_then(|c| c.first().copied())
        .ok_or("reply has no class")?;
    Ok(Answered {
        correct: class == i64::from(label),
        variants: grpc_param(r, "variants")
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        expected_accuracy: grpc_param(r, "expected_accuracy").as_f64(),
    })
}

fn parse_answer(v: &serde_json::Value, label: u8) -> Result<Answered, String> {
    let outputs = v["outputs"].as_array().ok_or("reply has no outputs")?;
    let class = outputs
        .iter()
        .find(|o| o["name"] == "class")
        .and_then(|o| o["data"][0].as_i64())
        .ok_or("reply has no class")?;
    let p = &v["parameters"];
    Ok(Answered {
        correct: class == i64::from(label),
        variants: p["variants"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        expected_accuracy: p["expected_accuracy"].as_f64(),
    })
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.2}%", 100.0 * a as f64 / b as f64)
    }
}

fn report(
    results: &[(usize, Outcome)],
    log: &[String],
    intervals: usize,
    n: usize,
    wall: Duration,
    min_availability: f64,
) -> Result<(), CliError> {
    for line in log {
        println!("{line}");
    }
    println!();
    println!(
        "{:<13} {:>11} {:>9} {:>9}  {:>8}  variants that answered (requests)",
        "samples", "answered", "accuracy", "expected", "p50 ms"
    );
    let size = n.div_ceil(intervals);
    for chunk in results.chunks(size) {
        let (first, last) = (chunk[0].0, chunk[chunk.len() - 1].0);
        let ok: Vec<&Answered> = chunk
            .iter()
            .filter_map(|(_, o)| o.answer.as_ref().ok())
            .collect();
        let correct = ok.iter().filter(|x| x.correct).count();
        let expected: Vec<f64> = ok.iter().filter_map(|x| x.expected_accuracy).collect();
        let mean_expected = if expected.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.2}%",
                100.0 * expected.iter().sum::<f64>() / expected.len() as f64
            )
        };
        let mut sets: BTreeMap<String, usize> = BTreeMap::new();
        for x in &ok {
            *sets.entry(x.variants.join(",")).or_default() += 1;
        }
        let mut sets: Vec<(String, usize)> = sets.into_iter().collect();
        sets.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let sets: Vec<String> = sets.iter().map(|(k, v)| format!("{k} ({v})")).collect();
        let lat: Vec<f64> = chunk.iter().map(|(_, o)| o.latency).collect();
        println!(
            "{:<13} {:>11} {:>9} {:>9}  {:>8}  {}",
            format!("{first}-{last}"),
            format!("{}/{}", ok.len(), chunk.len()),
            pct(correct, ok.len()),
            mean_expected,
            ms(quantile(&lat, 0.5)),
            sets.join(", ")
        );
    }
    let ok: Vec<&Answered> = results
        .iter()
        .filter_map(|(_, o)| o.answer.as_ref().ok())
        .collect();
    let correct = ok.iter().filter(|x| x.correct).count();
    let lat: Vec<f64> = results.iter().map(|(_, o)| o.latency).collect();
    let lost: Vec<String> = results
        .iter()
        .filter_map(|(i, o)| o.answer.as_ref().err().map(|e| format!("sample {i}: {e}")))
        .collect();
    println!();
    println!(
        "requests {}, answered {} (availability {}), lost {}",
        results.len(),
        ok.len(),
        pct(ok.len(), results.len()),
        lost.len()
    );
    println!("accuracy {} of answered requests", pct(correct, ok.len()));
    println!(
        "latency ms: p50 {}  p90 {}  p99 {}  max {}  ({:.1} requests/s over {:.1} s)",
        ms(quantile(&lat, 0.5)),
        ms(quantile(&lat, 0.9)),
        ms(quantile(&lat, 0.99)),
        ms(quantile(&lat, 1.0)),
        results.len() as f64 / wall.as_secs_f64().max(1e-9),
        wall.as_secs_f64()
    );
    for l in lost.iter().take(5) {
        println!("  lost: {l}");
    }
    let availability = ok.len() as f64 / results.len().max(1) as f64;
    if availability < min_availability {
        return Err(CliError::msg(format!(
            "availability {:.4} is below --min-availability {min_availability}",
            availability
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kill_events() {
        assert_eq!(
            parse_event("v1@30%"),
            Ok(Event {
                variant: "v1".into(),
                at: At::Percent(30.0)
            })
        );
        assert_eq!(parse_event("v2@1200").map(|e| e.at), Ok(At::Sample(1200)));
        assert!(parse_event("v1").is_err());
        assert!(parse_event("@3").is_err());
        assert!(parse_event("v1@130%").is_err());
        assert!(parse_event("v1@x").is_err());
        assert_eq!(At::Percent(30.0).index(1000), 300);
        assert_eq!(At::Sample(5000).index(1000), 1000);
    }

    #[test]
    fn parses_an_aggregator_answer() {
        let v = serde_json::json!({
            "outputs": [{"name": "class", "shape": [1], "datatype": "INT64", "data": [3]}],
            "parameters": {"variants": ["v0", "v2"], "expected_accuracy": 0.9, "degraded": true}
        });
        let a = parse_answer(&v, 3).expect("answer");
        assert!(a.correct);
        assert_eq!(a.variants, vec!["v0", "v2"]);
        assert!(parse_answer(&serde_json::json!({}), 1).is_err());
    }
}
