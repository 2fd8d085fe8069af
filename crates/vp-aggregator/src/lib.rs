//! Aggregator: fans each request out to the live variant servers, waits up to a deadline, combines the top-k
//! replies and says which variants answered and how accurate the answer is expected to be. Variant endpoints
//! come from a config file that is re-read when it changes; background probes skip dead variants.

mod api;
mod args;
mod fanout;
mod image_input;
mod metrics;
mod prober;
mod state;

pub use args::Args;
pub use image_input::{ImageError, image_to_sample};
pub use state::{LoadError, Snapshot, load_snapshot};

use std::sync::Arc;
use tokio::net::TcpListener;

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
    let app = api::router(
        api::AppState {
            live,
            client,
            metrics,
        },
        &args,
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(vp_server::shutdown_signal())
        .await
        .map_err(LoadError::Serve)?;
    tracing::info!("aggregator stopped");
    Ok(())
}
