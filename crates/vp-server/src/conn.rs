//! Serving a router over TCP with limits against slow and idle clients: a cap on open connections (the accept
//! loop waits for a free slot, so descriptors stay bounded), hyper's header-read timeout (a client that sends
//! its request head too slowly is disconnected), and an idle timeout (a keep-alive connection with no request in
//! flight and no bytes moving is closed). axum's own `serve` has none of these. The same loop serves gRPC over
//! HTTP/2 ([`serve_grpc`]), where the header-read timeout becomes a keep-alive ping that closes dead peers.

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

/// Connection-level limits of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Longest time a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// A connection with nothing in flight and no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
}

/// When a connection last moved bytes and how many of its requests are being handled.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the connection has been idle (zero while a request is being handled).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Counts a request as in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A TCP stream that records when bytes last moved.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The wire protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    /// HTTP/2 only (gRPC).
    Http2,
}

/// Serves `app` on `listener` (HTTP/1.1) with `limits` until `shutdown` resolves, then stops accepting, lets
/// every open connection finish its current request and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, app, limits, shutdown, Protocol::Http1).await
}

/// Serves a gRPC router ([`crate::grpc::router`]) on `listener` over HTTP/2 with the same connection cap, idle
/// timeout and graceful shutdown as [`serve`]; a peer that stops answering keep-alive pings (sent every
/// header-read timeout) is disconnected.
pub async fn serve_grpc(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, app, limits, shutdown, Protocol::Http2).await
}

/// Serves `http` (HTTP/1.1) and, when given, `grpc` (HTTP/2) until `shutdown` resolves, then drains both.
pub async fn serve_all(
    http: (TcpListener, Router),
    grpc: Option<(TcpListener, Router)>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let servers = async {
        let h = serve(http.0, http.1, limits, stopped(stop_rx.clone()));
        match grpc {
            Some((l, app)) => {
                let g = serve_grpc(l, app, limits, stopped(stop_rx.clone()));
                tokio::try_join!(h, g).map(|_| ())
            }
            None => h.await,
        }
    };
    tokio::pin!(servers);
    tokio::select! {
        r = &mut servers => return r,
        () = shutdown => {}
    }
    let _ = stop_tx.send(true);
    servers.await
}

async fn serve_with(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
    protocol: Protocol,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            s = slots.clone().acquire_owned() => s.map_err(io::Error::other)?,
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            app.clone(),
            limits,
            stop_rx.clone(),
            slot,
            protocol,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds one slot until it has closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    app: Router,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
    protocol: Protocol,
) {
    let activity = Arc::new(Activity::new());
    activity.touch();
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let svc_activity = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let app = app.clone();
        let guard = InFlight::new(&svc_activity);
        async move {
            let r = app.oneshot(req).await;
            drop(guard);
            r
        }
    });
    match protocol {
        Protocol::Http1 => {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(io, service);
            drive(conn, &activity, limits, stop).await;
        }
        Protocol::Http2 => {
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(limits.header_read_timeout)
                .keep_alive_timeout(limits.header_read_timeout)
                .max_concurrent_streams(256)
                .serve_connection(io, service);
            drive(conn, &activity, limits, stop).await;
        }
    }
}

/// A hyper server connection that can be told to finish its requests and close.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Graceful for http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming>,
    S::Future: Send + 'static,
    S::ResBody: hyper::body::Body + Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs `conn` to its end, closing it gracefully on shutdown or when it has been idle too long.
async fn drive<C: Graceful>(
    conn: C,
    activity: &Activity,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    tokio::pin!(conn);
    let period = (limits.idle_timeout / 4).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful();
                closing = true;
            }
            _ = tick.tick(), if !closing => {
                if activity.idle_for() >= limits.idle_timeout {
                    tracing::debug!("closing an idle connection");
                    conn.as_mut().graceful();
                    closing = true;
                }
            }
        }
    }
}
