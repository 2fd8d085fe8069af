//! Process helpers: finding the `vp-variant` and `vp-aggregator` binaries, stopping processes with SIGTERM and
//! then SIGKILL, and waiting for a server to become ready.

use crate::CliError;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::time::Duration;

/// Finds a sibling binary: `$VP_BIN_DIR/<name>`, else next to this executable, else on `PATH`.
pub fn find_binary(name: &str) -> Result<PathBuf, CliError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("VP_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
    {
        dirs.push(d.clone());
        // Integration tests run from target/<profile>/deps.
        if let Some(up) = d.parent() {
            dirs.push(up.to_path_buf());
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CliError::msg(format!(
                "cannot find the {name} binary next to vpctl or on PATH; build the workspace \
                 (cargo build --release) or set VP_BIN_DIR"
            ))
        })
}

/// Sends a signal to a process; a process that is already gone is not an error.
pub fn signal(pid: u32, sig: Signal) -> Result<(), CliError> {
    let p = i32::try_from(pid).map_err(|_| CliError::msg(format!("bad pid {pid}")))?;
    match kill(Pid::from_raw(p), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(CliError::msg(format!("cannot signal process {pid}: {e}"))),
    }
}

/// Stops a child: SIGTERM, then SIGKILL if it has not exited after `grace`.
pub async fn stop_child(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = signal(pid, Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// Polls `url` until it answers 2xx or `timeout` passes.
pub async fn wait_ready(client: &reqwest::Client, url: &str, timeout: Duration) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if let Ok(r) = client
            .get(url)
            .timeout(Duration::from_millis(500))
            .send()
            .await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// How the start-up of a server process ended.
#[derive(Debug)]
pub enum Startup {
    /// Its readiness URL answered 2xx.
    Ready,
    /// Neither within the timeout.
    TimedOut,
    /// The process exited first (a port already taken, a bad model, ...).
    Exited(std::process::ExitStatus),
}

/// Waits until `url` answers 2xx, `child` exits, or `timeout` passes: a server that dies during start-up is
/// reported at once instead of after the whole timeout.
pub async fn wait_started(
    client: &reqwest::Client,
    url: &str,
    child: &mut tokio::process::Child,
    timeout: Duration,
) -> Startup {
    let ready = wait_ready(client, url, timeout);
    tokio::pin!(ready);
    let exited = async {
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        ok = &mut ready => if ok { Startup::Ready } else { Startup::TimedOut },
        status = exited => Startup::Exited(status),
    }
}

/// An HTTP client for local endpoints (no proxies).
pub fn client() -> Result<reqwest::Client, CliError> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .map_err(|e| CliError::msg(format!("http client: {e}")))
}
