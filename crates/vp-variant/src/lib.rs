//! Variant server: serves one ONNX model of a family over Open Inference Protocol v2 (REST, and gRPC on its own
//! port) and replies with the top-k classes of each sample. One process per edge device.

mod api;
mod args;
mod loader;
mod metrics;

pub use args::Args;
pub use loader::LoadError;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

/// Verifies and loads the model, starts serving, warms the model up, then marks the server ready. Returns
/// when a shutdown signal arrives and in-flight requests are done.
pub async fn serve(args: Args) -> Result<(), LoadError> {
    let loaded = loader::load(&args)?;
    let state = Arc::new(api::AppState::new(&args, loaded)?);
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| LoadError::Bind(args.listen.clone(), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| LoadError::Bind(args.listen.clone(), e))?;
    let app = api::router(state.clone(), &args);
    tracing::info!(variant = %state.name, %addr, "listening (live, not ready until warm-up)");
    let grpc = match &args.grpc_listen {
        Some(at) => {
            let l = TcpListener::bind(at)
                .await
                .map_err(|e| LoadError::Bind(at.clone(), e))?;
            let grpc_addr = l.local_addr().map_err(|e| LoadError::Bind(at.clone(), e))?;
            tracing::info!(variant = %state.name, addr = %grpc_addr, "gRPC listening");
            let limit = args.body_limit(state.spec.sample_len());
            Some((l, vp_server::grpc::router(state.clone(), limit)))
        }
        None => None,
    };
    let warm = state.clone();
    tokio::spawn(async move {
        match warm.warm_up().await {
            Ok(()) => {
                warm.ready.store(true, Ordering::SeqCst);
                warm.metrics.ready.set(1);
                tracing::info!(variant = %warm.name, "warm-up done, ready");
            }
            Err(e) => {
                tracing::error!(variant = %warm.name, error = %e, "warm-up failed; staying unready")
            }
        }
    });
    vp_server::serve_all(
        (listener, app),
        grpc,
        args.limits.conn_limits(),
        vp_server::shutdown_signal(),
    )
    .await
    .map_err(LoadError::Serve)?;
    tracing::info!(variant = %state.name, "stopped");
    Ok(())
}
