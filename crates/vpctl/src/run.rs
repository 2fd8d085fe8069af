//! `vpctl run`: the embedded default deployment. Starts every variant as its own `vp-variant` process on
//! loopback plus one `vp-aggregator`, prints the endpoints, restarts crashed processes with exponential backoff
//! (unless `eval --kill` holds them down), and stops everything on Ctrl-C or SIGTERM.

use crate::CliError;
use crate::ports::free_port;
use crate::procs::{Startup, client, find_binary, stop_child, wait_started};
use crate::runstate::{Proc, RunState, is_held};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use vp_core::{AggregatorConfig, CombineRule, Manifest, VariantEndpoint};

/// How replies are combined (see docs/dataplane.md).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Combine {
    SoftVote,
    Majority,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The family's ensemble.yaml.
    pub manifest: PathBuf,
    /// Aggregator port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Port of the first variant; the others follow (0 picks free ones).
    #[arg(long, default_value_t = 9101)]
    pub variant_port: u16,
    /// Aggregator gRPC port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8081)]
    pub grpc_port: u16,
    /// gRPC port of the first variant; the others follow (0 picks free ones).
    #[arg(long, default_value_t = 9201)]
    pub variant_grpc_port: u16,
    /// Variants to run (comma-separated names); default: all of the family.
    #[arg(long, value_delimiter = ',')]
    pub variants: Vec<String>,
    /// k each variant replies with (1 <= k <= classes/2).
    #[arg(long, default_value_t = 3)]
    pub top_k: usize,
    /// Per-request deadline for variant replies, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub deadline_ms: u64,
    /// Fewest replies that still give an answer.
    #[arg(long, default_value_t = 1)]
    pub min_variants: usize,
    /// Combine rule.
    #[arg(long, value_enum, default_value = "soft-vote")]
    pub combine: Combine,
    /// ONNX Runtime threads per variant.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// State folder (run.json, aggregator config, logs); default $VP_STATE_DIR or <tmp>/vpctl.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// One supervised process.
struct Managed {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    url: String,
    /// `host:port` of its gRPC endpoint.
    grpc: String,
    ready_url: String,
    is_variant: bool,
    child: Option<Child>,
    started: Instant,
    next_start: Instant,
    backoff: Duration,
    restarts: u32,
    announced_hold: bool,
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A process that ran this long before crashing restarts after the minimum backoff again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// `base + i`, or a free port (crate::ports) when `base` is 0.
fn nth_port(base: u16, i: usize, flag: &str) -> Result<u16, CliError> {
    if base == 0 {
        return free_port();
    }
    u16::try_from(i)
        .ok()
        .and_then(|i| base.checked_add(i))
        .ok_or_else(|| CliError::msg(format!("{flag} too high")))
}

impl Managed {
    fn spawn(&mut self, logs: &Path) -> Result<(), CliError> {
        let log_path = logs.join(format!("{}.log", self.name));
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| CliError::msg(format!("{}: {e}", log_path.display())))
        };
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(open()?))
            .stderr(Stdio::from(open()?))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CliError::msg(format!("cannot start {}: {e}", self.program.display())))?;
        self.child = Some(child);
        self.started = Instant::now();
        Ok(())
    }

    fn proc(&self) -> Proc {
        Proc {
            name: self.name.clone(),
            url: self.url.clone(),
            grpc: Some(self.grpc.clone()),
            pid: self.child.as_ref().and_then(|c| c.id()),
            restarts: self.restarts,
        }
    }
}

fn log_tail(logs: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

fn absolute(p: &Path) -> Result<PathBuf, CliError> {
    std::fs::canonicalize(p).map_err(|e| CliError::msg(format!("{}: {e}", p.display())))
}

pub async fn run(a: RunArgs) -> Result<(), CliError> {
    let manifest_path = absolute(&a.manifest)?;
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| CliError::msg(format!("{}: {e}", manifest_path.display())))?;
    let manifest = Manifest::from_yaml(&text)
        .map_err(|e| CliError::msg(format!("{}: {e}", manifest_path.display())))?;
    vp_infer::check_runtime().map_err(|e| CliError::msg(e.to_string()))?;
    let variant_bin = find_binary("vp-variant")?;
    let aggregator_bin = find_binary("vp-aggregator")?;
    let names: Vec<String> = if a.variants.is_empty() {
        manifest.variants.iter().map(|v| v.name.clone()).collect()
    } else {
        a.variants.clone()
    };

    let dir = a
        .state_dir
        .clone()
        .unwrap_or_else(crate::runstate::default_dir);
    prepare_state_dir(&dir)?;
    let logs = dir.join("logs");

    let mut endpoints = Vec::new();
    let mut managed = Vec::new();
    let now = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let port = nth_port(a.variant_port, i, "--variant-port")?;
        let grpc = format!(
            "127.0.0.1:{}",
            nth_port(a.variant_grpc_port, i, "--variant-grpc-port")?
        );
        let url = format!("http://127.0.0.1:{port}");
        endpoints.push(VariantEndpoint {
            name: name.clone(),
            url: url.clone(),
        });
        managed.push(Managed {
            name: name.clone(),
            program: variant_bin.clone(),
            args: vec![
                "--manifest".into(),
                manifest_path.display().to_string(),
                "--variant".into(),
                name.clone(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--grpc-listen".into(),
                grpc.clone(),
                "--default-k".into(),
                a.top_k.to_string(),
                "--threads".into(),
                a.threads.to_string(),
            ],
            ready_url: format!("{url}/v2/health/ready"),
            url,
            grpc,
            is_variant: true,
            child: None,
            started: now,
            next_start: now,
            backoff: MIN_BACKOFF,
            restarts: 0,
            announced_hold: false,
        });
    }
    let config = AggregatorConfig {
        schema_version: 1,
        manifest: manifest_path.clone(),
        model_name: None,
        top_k: a.top_k,
        deadline_ms: a.deadline_ms,
        min_variants: a.min_variants,
        combine: match a.combine {
            Combine::SoftVote => CombineRule::SoftVote,
            Combine::Majority => CombineRule::Majority,
        },
        weights: Default::default(),
        probe_interval_ms: 200,
        probe_timeout_ms: 300,
        outlier_failures: 3,
        outlier_ejection_ms: 5_000,
        variant_wire: Default::default(),
        variants: endpoints,
    };
    config
        .validate(&manifest)
        .map_err(|e| CliError::msg(e.to_string()))?;
    let config_path = dir.join("aggregator.yaml");
    let yaml = serde_yaml::to_string(&config).map_err(|e| CliError::msg(e.to_string()))?;
    std::fs::write(&config_path, yaml)
        .map_err(|e| CliError::msg(format!("{}: {e}", config_path.display())))?;
    let agg_port = if a.port == 0 { free_port()? } else { a.port };
    let agg_url = format!("http://127.0.0.1:{agg_port}");
    let agg_grpc = format!("127.0.0.1:{}", nth_port(a.grpc_port, 0, "--grpc-port")?);
    managed.push(Managed {
        name: "aggregator".into(),
        program: aggregator_bin,
        args: vec![
            "--config".into(),
            config_path.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{agg_port}"),
            "--grpc-listen".into(),
            agg_grpc.clone(),
        ],
        ready_url: format!("{agg_url}/v2/health/ready"),
        url: agg_url.clone(),
        grpc: agg_grpc,
        is_variant: false,
        child: None,
        started: now,
        next_start: now,
        backoff: MIN_BACKOFF,
        restarts: 0,
        announced_hold: false,
    });

    let model_name = config.model_name(&manifest).to_string();
    let result = supervise(
        &dir,
        &logs,
        &mut managed,
        &manifest_path,
        &model_name,
        &config,
    )
    .await;
    println!(
        "stopping {} processes",
        managed.iter().filter(|m| m.child.is_some()).count()
    );
    // SIGTERM to all at once, then wait for each (SIGKILL after the grace period).
    for c in managed.iter().filter_map(|m| m.child.as_ref()) {
        if let Some(pid) = c.id() {
            let _ = crate::procs::signal(pid, nix::sys::signal::Signal::SIGTERM);
        }
    }
    for c in managed.iter_mut().filter_map(|m| m.child.as_mut()) {
        stop_child(c, Duration::from_secs(5)).await;
    }
    let _ = std::fs::remove_file(RunState::path(&dir));
    let _ = std::fs::remove_dir_all(dir.join("hold"));
    println!("stopped");
    result
}

fn prepare_state_dir(dir: &Path) -> Result<(), CliError> {
    if let Ok(old) = RunState::read(dir)
        && Path::new(&format!("/proc/{}", old.supervisor_pid)).exists()
        && old.supervisor_pid != std::process::id()
    {
        return Err(CliError::msg(format!(
            "an ensemble is already running from {} (vpctl run, pid {}); stop it or pass --state-dir",
            dir.display(),
            old.supervisor_pid
        )));
    }
    std::fs::create_dir_all(dir.join("logs"))
        .map_err(|e| CliError::msg(format!("{}: {e}", dir.display())))?;
    let _ = std::fs::remove_dir_all(dir.join("hold"));
    Ok(())
}

fn write_state(
    dir: &Path,
    managed: &[Managed],
    manifest: &Path,
    model_name: &str,
) -> Result<(), CliError> {
    let agg = managed
        .iter()
        .find(|m| !m.is_variant)
        .ok_or_else(|| CliError::msg("no aggregator"))?;
    RunState {
        supervisor_pid: std::process::id(),
        manifest: manifest.to_path_buf(),
        model_name: model_name.to_string(),
        aggregator: agg.proc(),
        variants: managed
            .iter()
            .filter(|m| m.is_variant)
            .map(Managed::proc)
            .collect(),
    }
    .write(dir)
}

async fn supervise(
    dir: &Path,
    logs: &Path,
    managed: &mut [Managed],
    manifest: &Path,
    model_name: &str,
    config: &AggregatorConfig,
) -> Result<(), CliError> {
    let http = client()?;
    for m in managed.iter_mut() {
        m.spawn(logs)?;
    }
    write_state(dir, managed, manifest, model_name)?;
    // Start-up: every process must become ready; one that exits first fails the run with its log.
    for m in managed.iter_mut() {
        let Some(child) = m.child.as_mut() else {
            return Err(CliError::msg(format!("{} was not started", m.name)));
        };
        match wait_started(&http, &m.ready_url, child, Duration::from_secs(90)).await {
            Startup::Ready => {}
            Startup::TimedOut => {
                return Err(CliError::msg(format!(
                    "{} did not become ready within 90 s; log:\n{}",
                    m.name,
                    log_tail(logs, &m.name)
                )));
            }
            Startup::Exited(status) => {
                return Err(CliError::msg(format!(
                    "{} exited during start-up ({status}); log:\n{}",
                    m.name,
                    log_tail(logs, &m.name)
                )));
            }
        }
    }
    let agg = managed
        .iter()
        .find(|m| !m.is_variant)
        .map(|m| (m.url.clone(), m.grpc.clone()))
        .unwrap_or_default();
    println!(
        "ensemble {model_name}: {} variants, top_k {}, deadline {} ms, min_variants {}",
        managed.len() - 1,
        config.top_k,
        config.deadline_ms,
        config.min_variants
    );
    println!(
        "  aggregator  {}  (POST /v2/models/{model_name}/infer, POST /v1/classify, GET /metrics), gRPC {}",
        agg.0, agg.1
    );
    for m in managed.iter().filter(|m| m.is_variant) {
        println!(
            "  {:<10}  {}  (POST /v2/models/{}/infer), gRPC {}",
            m.name, m.url, m.name, m.grpc
        );
    }
    println!("state and logs in {}; press Ctrl-C to stop", dir.display());

    let shutdown = vp_server::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let mut changed = false;
        let now = Instant::now();
        for m in managed.iter_mut() {
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    m.child = None;
                    if m.started.elapsed() > HEALTHY_RUN {
                        m.backoff = MIN_BACKOFF;
                    }
                    m.next_start = now + m.backoff;
                    if m.is_variant && is_held(dir, &m.name) {
                        println!(
                            "{} stopped ({status}); held down by vpctl eval, not restarting",
                            m.name
                        );
                        m.announced_hold = true;
                    } else {
                        println!(
                            "{} exited ({status}); restarting in {:.1} s",
                            m.name,
                            m.backoff.as_secs_f64()
                        );
                    }
                    m.backoff = (m.backoff * 2).min(MAX_BACKOFF);
                    changed = true;
                }
            } else if m.is_variant && is_held(dir, &m.name) {
                m.next_start = now;
            } else if now >= m.next_start {
                m.restarts += 1;
                m.announced_hold = false;
                match m.spawn(logs) {
                    Ok(()) => println!("{} restarted (restart #{})", m.name, m.restarts),
                    Err(e) => {
                        println!("{}: {e}", m.name);
                        m.next_start = now + m.backoff;
                    }
                }
                changed = true;
            }
        }
        if changed {
            write_state(dir, managed, manifest, model_name)?;
        }
    }
}
