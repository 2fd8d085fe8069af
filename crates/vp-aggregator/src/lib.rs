//! Aggregator: fans each request out to the live variant servers, waits up to a deadline, combines the top-k
//! replies and says which variants answered and how accurate the answer is expected to be. Variant endpoints
//! come from a config file that is re-read when it changes; background probes skip dead variants.

mod api;
mod args;
mod fanout;
mod image_input;
mod metrics;
mod outlier;
mod prober;
mod state;

pub use args::Args;
pub use image_input::{ImageError, ImageHeader, MAX_SIDE, image_to_sample, inspect};
pub use state::{LoadError, Snapshot, load_snapshot};

use std::sync::Arc;
use tokio::net::TcpListener;
use vp_server::{Admission, BodyCost, MemoryBudget, Shedder};

/// Memory the aggregator keeps for itself out of `--memory-budget-mib` (runtime, config, HTTP client pool;
/// about 10 MiB RSS at rest, see docs/dataplane.md).
pub const RESERVE_MIB: u64 = 32;

/// Admission control for the two inference routes: one shedder (its size derived from the OIP route's cost
/// unless set by flags) and one memory budget. An OIP request reserves 4x its body (the body, the decoded
/// batch, and the JSON sent to the variants); a classify request reserves its body, then its decode once the
/// image header has been read.
fn admission(
    args: &Args,
    live: &state::Live,
    metrics: &metrics::Metrics,
) -> Result<(Arc<Admission>, Arc<Admission>), LoadError> {
    let budget = MemoryBudget::new(args.memory_budget_mib, RESERVE_MIB)
        .map_err(|e| LoadError::Metrics(e.to_string()))?;
    let sample = live.snapshot().spec.sample_len();
    let infer = BodyCost {
        limit: api::json_limit(args.max_batch, sample) as u64,
        per_byte: 4,
        fixed: 256 * 1024,
    };
    let classify = BodyCost {
        limit: args.max_image_bytes as u64,
        per_byte: 1,
        fixed: 256 * 1024,
    };
    for (flag, worst) in [
        ("--max-batch", infer.worst()),
        ("--max-image-bytes", classify.worst()),
    ] {
        if worst > budget.capacity() {
            return Err(LoadError::Metrics(format!(
                "--memory-budget-mib {} is too small for {flag}: one request may need {} MiB",
                args.memory_budget_mib,
                worst.div_ceil(1 << 20)
            )));
        }
    }
    let (in_flight, queue) = args.limits.admission(budget.capacity(), infer.worst());
    let shedder = Arc::new(Shedder::new(in_flight, queue, metrics.shed.clone()));
    let make = |cost| {
        Arc::new(Admission {
            shedder: shedder.clone(),
            budget: budget.clone(),
            cost,
        })
    };
    Ok((make(infer), make(classify)))
}

/// Loads the config, starts the config watcher and the health prober, and serves until a shutdown signal.
pub async fn serve(args: Args) -> Result<(), LoadError> {
    let metrics = Arc::new(metrics::Metrics::new().map_err(|e| LoadError::Metrics(e.to_string()))?);
    let snapshot = load_snapshot(&args.config, args.max_batch)?;
    let live = Arc::new(state::Live::new(snapshot, metrics.clone()));
    let client = fanout::client().map_err(|e| LoadError::Metrics(format!("http client: {e}")))?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| LoadError::Bind(args.listen.clone(), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| LoadError::Bind(args.listen.clone(), e))?;
    tokio::spawn(state::watch_config(
        live.clone(),
        args.config.clone(),
        args.max_batch,
    ));
    tokio::spawn(prober::run(live.clone(), client.clone()));
    tracing::info!(%addr, config = %args.config.display(), "aggregator listening");
    let (infer_admission, classify_admission) = admission(&args, &live, &metrics)?;
    let state = api::AppState {
        live,
        client,
        metrics,
        infer_admission,
        classify_admission,
        request_timeout_ms: args.request_timeout_ms,
    };
    let grpc = match &args.grpc_listen {
        Some(at) => {
            let l = TcpListener::bind(at)
                .await
                .map_err(|e| LoadError::Bind(at.clone(), e))?;
            let grpc_addr = l.local_addr().map_err(|e| LoadError::Bind(at.clone(), e))?;
            tracing::info!(addr = %grpc_addr, "aggregator gRPC listening");
            let limit = state.infer_admission.cost.limit as usize;
            Some((
                l,
                vp_server::grpc::router(Arc::new(api::Grpc(state.clone())), limit),
            ))
        }
        None => None,
    };
    let app = api::router(state, &args);
    vp_server::serve_all(
        (listener, app),
        grpc,
        args.limits.conn_limits(),
        vp_server::shutdown_signal(),
    )
    .await
    .map_err(LoadError::Serve)?;
    tracing::info!("aggregator stopped");
    Ok(())
}
