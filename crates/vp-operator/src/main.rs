//! `vp-operator`: runs the VariantEnsemble controller. Wires flags, logging and shutdown (vp-server's), the HTTP
//! endpoints, leader election and one controller run together; the work happens in the library.

use clap::Parser;
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::api::{Api, ListParams};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::watch;
use vp_api::VariantEnsemble;
use vp_operator::config::{DEFAULT_HOST_PATH_PREFIX, OperatorConfig};
use vp_operator::disruption::Knobs;
use vp_operator::gate::Gate;
use vp_operator::{controller, failover, http, leader, metrics::Metrics};
use vp_server::LogFormat;

/// Kubernetes operator for variant-parallel ensembles (VariantEnsemble, vp.dev/v1alpha1).
#[derive(Debug, Parser)]
#[command(name = "vp-operator", version)]
struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "VP_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Default variant server image.
    #[arg(long, env = "VP_VARIANT_IMAGE")]
    variant_image: Option<String>,
    /// Default aggregator image.
    #[arg(long, env = "VP_AGGREGATOR_IMAGE")]
    aggregator_image: Option<String>,
    /// Image (with sh, curl, sha256sum) that downloads URL model sources.
    #[arg(long, env = "VP_FETCH_IMAGE")]
    fetch_image: Option<String>,
    /// Default variant container resources, as JSON (a core/v1 ResourceRequirements).
    #[arg(long, env = "VP_VARIANT_RESOURCES")]
    variant_resources: Option<String>,
    /// Default aggregator container resources, as JSON.
    #[arg(long, env = "VP_AGGREGATOR_RESOURCES")]
    aggregator_resources: Option<String>,
    /// Folders under which hostPath model sources may lie, comma-separated; an ensemble naming another path
    /// is refused with an InvalidSpec condition. Empty ("") refuses every hostPath source.
    #[arg(
        long,
        env = "VP_HOST_PATH_PREFIXES",
        value_delimiter = ',',
        default_value = DEFAULT_HOST_PATH_PREFIX
    )]
    host_path_prefixes: Vec<String>,
    /// Longest a URL model download may take, in seconds.
    #[arg(long, env = "VP_FETCH_TIMEOUT_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    fetch_timeout_seconds: u32,
    /// Create NetworkPolicies for each ensemble (variants reachable only from their aggregator and from the
    /// monitoring namespace).
    #[arg(long, env = "VP_NETWORK_POLICIES", default_value_t = true, action = clap::ArgAction::Set)]
    network_policies: bool,
    /// Namespace whose pods may reach the variants' and aggregators' ports for metrics (Prometheus); "" for
    /// none.
    #[arg(long, env = "VP_MONITORING_NAMESPACE", default_value = "monitoring")]
    monitoring_namespace: String,
    /// Log format.
    #[arg(long, env = "VP_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Elect a leader through a Lease so that only one of several replicas acts.
    #[arg(long, env = "VP_LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "VP_LEADER_LEASE", default_value = "vp-operator-leader")]
    lease_name: String,
    /// Watch only this namespace's VariantEnsembles (default: all namespaces).
    #[arg(long, env = "VP_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// At most this many ensembles reconcile at once (0: no limit).
    #[arg(long, env = "VP_RECONCILE_CONCURRENCY", default_value_t = 16)]
    reconcile_concurrency: u16,
    /// This replica's identity (defaults to the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Leader election: how long a silent leader keeps the Lease (standbys wait this plus the retry period).
    #[arg(long, env = "VP_LEADER_LEASE_DURATION_SECONDS", default_value_t = 15)]
    leader_lease_duration_seconds: u64,
    /// Leader election: a leader that has not renewed for this long stops acting (< lease duration).
    #[arg(long, env = "VP_LEADER_RENEW_DEADLINE_SECONDS", default_value_t = 10)]
    leader_renew_deadline_seconds: u64,
    /// Leader election: how often to renew or retry (< renew deadline).
    #[arg(long, env = "VP_LEADER_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    leader_retry_period_seconds: u64,
    /// A zone (topology.kubernetes.io/zone) with more than this share of its nodes failed at once is
    /// disrupted: no variant moves off its nodes.
    #[arg(long, env = "VP_UNHEALTHY_ZONE_THRESHOLD", default_value_t = 0.5)]
    unhealthy_zone_threshold: f64,
    /// Nodes per second, per zone, whose variants may start moving (token bucket; starts empty after a pause).
    #[arg(long, env = "VP_EVICTION_RATE", default_value_t = 1.0)]
    eviction_rate: f64,
    /// Nodes per zone whose variants may start moving at once.
    #[arg(long, env = "VP_EVICTION_BURST", default_value_t = 10)]
    eviction_burst: u32,
    /// How often nodes renew their Lease (the kubelet's nodeLeaseDurationSeconds / 4).
    #[arg(long, env = "VP_NODE_RENEW_INTERVAL_SECONDS", default_value_t = 10)]
    node_renew_interval_seconds: u64,
    /// A node whose Lease is silent this long is overdue: moves in its zone wait until it renews or fails.
    #[arg(long, env = "VP_NODE_OVERDUE_AFTER_SECONDS", default_value_t = 11)]
    node_overdue_after_seconds: u64,
    /// The view is stale (no variant moves) when the API server has not answered for this long.
    #[arg(long, env = "VP_VIEW_STALE_AFTER_SECONDS", default_value_t = 10)]
    view_stale_after_seconds: u64,
}

/// Failure detection settings from the flags.
fn failover_settings(a: &Args) -> Result<failover::Settings, String> {
    let knobs = Knobs {
        unhealthy_threshold: a.unhealthy_zone_threshold,
        renew_interval: Duration::from_secs(a.node_renew_interval_seconds),
        overdue_after: Duration::from_secs(a.node_overdue_after_seconds),
        eviction_rate: a.eviction_rate,
        eviction_burst: a.eviction_burst,
    };
    knobs.validate()?;
    if a.view_stale_after_seconds == 0 {
        return Err("--view-stale-after-seconds must be at least 1".into());
    }
    Ok(failover::Settings {
        knobs,
        stale_after: Duration::from_secs(a.view_stale_after_seconds),
    })
}

/// How long a controller may take to stop after leadership was lost (its writes are refused already).
const STOP_AFTER_LOSS: Duration = Duration::from_secs(5);

fn resources(
    flag: &str,
    v: Option<&str>,
    default: ResourceRequirements,
) -> Result<ResourceRequirements, String> {
    match v {
        None => Ok(default),
        Some(s) => serde_json::from_str(s)
            .map_err(|e| format!("--{flag}: not a ResourceRequirements JSON: {e}")),
    }
}

fn operator_config(a: &Args) -> Result<OperatorConfig, String> {
    let d = OperatorConfig::default();
    Ok(OperatorConfig {
        variant_image: a.variant_image.clone().unwrap_or(d.variant_image),
        aggregator_image: a.aggregator_image.clone().unwrap_or(d.aggregator_image),
        fetch_image: a.fetch_image.clone().unwrap_or(d.fetch_image),
        variant_resources: resources(
            "variant-resources",
            a.variant_resources.as_deref(),
            d.variant_resources,
        )?,
        aggregator_resources: resources(
            "aggregator-resources",
            a.aggregator_resources.as_deref(),
            d.aggregator_resources,
        )?,
        host_path_prefixes: a
            .host_path_prefixes
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(|p| {
                if p.starts_with('/') {
                    Ok(p.to_string())
                } else {
                    Err(format!(
                        "--host-path-prefixes: {p:?} is not an absolute path"
                    ))
                }
            })
            .collect::<Result<_, _>>()?,
        fetch_timeout_seconds: a.fetch_timeout_seconds,
        network_policies: a.network_policies,
        monitoring_namespace: Some(a.monitoring_namespace.trim().to_string())
            .filter(|n| !n.is_empty()),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    vp_server::init_logging(args.log_format);
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "vp-operator failed");
            ExitCode::FAILURE
        }
    }
}

/// Resolves once `stop` turns true (the HTTP server, the election and the controller each wait on their own
/// receiver).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let config = operator_config(&args)?;
    let settings = failover_settings(&args)?;
    let metrics = Metrics::new().map_err(|e| format!("metrics: {e}"))?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client configuration: {e}"))?;
    check_crd(&client, args.watch_namespace.as_deref()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        vp_server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    // A standby replica is healthy and ready; it just does not act.
    let ready = Arc::new(AtomicBool::new(args.leader_elect));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(addr = %args.listen, "serving /metrics, /healthz, /readyz");
    let app = http::router(http::AppState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    let server = tokio::spawn(http::serve(listener, app, stopped(stop_rx.clone())));

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("vp-operator-{}", std::process::id()));
    let gate = Gate::open();
    let leadership = if args.leader_elect {
        let election = leader::Election {
            lease_duration: Duration::from_secs(args.leader_lease_duration_seconds),
            renew_deadline: Duration::from_secs(args.leader_renew_deadline_seconds),
            retry: Duration::from_secs(args.leader_retry_period_seconds),
            ..leader::Election::new(
                args.namespace.clone(),
                args.lease_name.clone(),
                identity.clone(),
            )
        };
        election.validate()?;
        match leader::lead(
            client.clone(),
            election,
            gate.clone(),
            stopped(stop_rx.clone()),
        )
        .await
        {
            Some(l) => Some(l),
            None => {
                server.abort();
                return Ok(if *stop_rx.borrow() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
        }
    } else {
        None
    };
    let stop = stopped(stop_rx.clone());
    let lost = leadership.as_ref().map(leader::Leadership::lost);
    let lost_too = leadership.as_ref().map(leader::Leadership::lost);
    let shutdown = async move {
        match lost {
            Some(lost) => tokio::select! { () = stop => {}, () = lost => {} },
            None => stop.await,
        }
    };
    metrics.leader.set(1);
    let scope = controller::Scope {
        identity,
        namespace: args.watch_namespace.clone(),
        concurrency: args.reconcile_concurrency,
        failover: settings,
        gate,
    };
    let run = controller::run(client, config, metrics.clone(), scope, ready, shutdown);
    // A lost leader stops acting at once (the gate refuses its writes) and exits soon after, even when a
    // reconcile hangs on a frozen connection.
    let gauge = metrics.clone();
    let give_up = async move {
        match lost_too {
            Some(lost) => {
                lost.await;
                gauge.leader.set(0);
                tokio::time::sleep(STOP_AFTER_LOSS).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = run => {}
        () = give_up => tracing::warn!("the controller did not stop within {STOP_AFTER_LOSS:?} of losing leadership"),
    }
    metrics.leader.set(0);
    if let Some(l) = leadership {
        if l.was_lost() {
            tracing::error!("lost leadership; exiting so that a fresh standby takes over");
            return Ok(ExitCode::FAILURE);
        }
        l.step_down().await;
    }
    match server.await {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => Err(format!("http server: {e}")),
        Err(e) => Err(format!("http server task: {e}")),
    }
}

/// The start-up check asks for what the operator will watch: with --watch-namespace its RBAC may cover only that
/// namespace.
async fn check_crd(client: &kube::Client, namespace: Option<&str>) -> Result<(), String> {
    let ensembles: Api<VariantEnsemble> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    ensembles
        .list(&ListParams::default().limit(1))
        .await
        .map(|_| ())
        .map_err(|e| format!(
            "cannot list VariantEnsembles ({e}); is the CRD installed? (cargo run -p vp-api --bin crdgen -- - | kubectl apply -f -)"
        ))
}
