//! `vp-operator`: runs the VariantEnsemble controller. Wires flags, logging, the HTTP endpoints, leader
//! election and graceful shutdown together; the work happens in the library.

use clap::{Parser, ValueEnum};
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::api::{Api, ListParams};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::watch;
use vp_api::VariantEnsemble;
use vp_operator::config::OperatorConfig;
use vp_operator::{controller, http, leader, metrics::Metrics, telemetry};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

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
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(matches!(args.log_format, LogFormat::Json));
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "vp-operator failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let config = operator_config(&args)?;
    let metrics = Metrics::new().map_err(|e| format!("metrics: {e}"))?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client configuration: {e}"))?;
    // The start-up check asks for what the operator will watch: with --watch-namespace its RBAC may cover only
    // that namespace.
    let ensembles: Api<VariantEnsemble> = match &args.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    if let Err(e) = ensembles.list(&ListParams::default().limit(1)).await {
        return Err(format!(
            "cannot list VariantEnsembles ({e}); is the CRD installed? (cargo run -p vp-api --bin crdgen -- - | kubectl apply -f -)"
        ));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(addr = %args.listen, "serving /metrics, /healthz, /readyz");
    let app = http::router(http::AppState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    let http_stop = stopped(stop_rx.clone());
    let server = tokio::spawn(async move { http::serve(listener, app, http_stop).await });

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("vp-operator-{}", std::process::id()));
    let mut lost_leadership = false;
    if args.leader_elect {
        let (lead_tx, mut lead_rx) = watch::channel(false);
        let election = leader::Election {
            namespace: args.namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            lease_duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        };
        let campaign = tokio::spawn(leader::run(client.clone(), election.clone(), lead_tx));
        // A standby replica is healthy and ready; it just does not act.
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(%identity, "waiting for leadership");
        let mut stop = stop_rx.clone();
        tokio::select! {
            r = lead_rx.wait_for(|l| *l) => { if r.is_err() { return Err("leader election ended".into()); } }
            _ = stop.wait_for(|s| *s) => { server.abort(); return Ok(ExitCode::SUCCESS); }
        }
        metrics.leader.set(1);
        let stop = stopped(stop_rx.clone());
        let lost = async move {
            let _ = lead_rx.wait_for(|l| !*l).await;
        };
        let (lost_tx, lost_rx) = watch::channel(false);
        let shutdown = async move {
            tokio::select! {
                () = stop => {}
                () = lost => { let _ = lost_tx.send(true); }
            }
        };
        let scope = controller::Scope {
            identity,
            namespace: args.watch_namespace.clone(),
            concurrency: args.reconcile_concurrency,
        };
        controller::run(
            client.clone(),
            config,
            metrics.clone(),
            scope,
            ready,
            shutdown,
        )
        .await;
        lost_leadership = *lost_rx.borrow();
        // Stop renewing first, or the campaign would take the released lease straight back.
        campaign.abort();
        if !lost_leadership {
            leader::release(client, &election).await;
        }
    } else {
        metrics.leader.set(1);
        controller::run(
            client,
            config,
            metrics.clone(),
            controller::Scope {
                identity,
                namespace: args.watch_namespace.clone(),
                concurrency: args.reconcile_concurrency,
            },
            ready,
            stopped(stop_rx.clone()),
        )
        .await;
    }
    metrics.leader.set(0);
    if lost_leadership {
        tracing::error!("lost leadership; exiting so that a fresh standby takes over");
        return Ok(ExitCode::FAILURE);
    }
    match server.await {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => Err(format!("http server: {e}")),
        Err(e) => Err(format!("http server task: {e}")),
    }
}
