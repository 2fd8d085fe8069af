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
use vp_operator::{controller, http, leader, metrics::Metrics};
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
}

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
    let leadership = if args.leader_elect {
        let election = leader::Election {
            namespace: args.namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            lease_duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        };
        match leader::lead(client.clone(), election, stopped(stop_rx.clone())).await {
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
    };
    controller::run(client, config, metrics.clone(), scope, ready, shutdown).await;
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
