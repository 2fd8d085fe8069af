//! Background health probes: asks every configured variant's `/v2/health/ready` each `probe_interval_ms`, so a
//! dead or hung variant is skipped before requests wait on it, and a restarted one rejoins within one period;
//! an ejected variant (see [`crate::outlier`]) is re-admitted by the first passed probe after its ejection.
//!
//! A probe that times out is sent once more at once before the variant is marked down. A timeout alone cannot
//! tell a slow variant from a stall of the aggregator itself (CPU throttling by its cgroup, a SIGSTOP, a paused
//! VM): after such a stall every timer has expired while the replies sit unread in the sockets, and one
//! interval's worth of probes would mark every variant down at once, so that requests get 503 "no variant is
//! available" until the next period. A refused connection or an error status marks the variant down at once.

use crate::state::{Endpoint, Live};
use std::sync::Arc;
use std::time::Duration;

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Passed,
    /// Connection refused or reset, or a status other than 2xx: the variant is not serving.
    Failed,
    /// No answer within `probe_timeout_ms`.
    TimedOut,
}

async fn probe_once(client: &reqwest::Client, ep: &Endpoint, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, client.get(&ep.ready_url).send()).await {
        Ok(Ok(r)) if r.status().is_success() => Probe::Passed,
        Ok(_) => Probe::Failed,
        Err(_) => Probe::TimedOut,
    }
}

/// One probe, with one immediate retry after a timeout; true when the variant passed.
async fn probe(client: &reqwest::Client, ep: &Endpoint, timeout: Duration) -> bool {
    match probe_once(client, ep, timeout).await {
        Probe::Passed => true,
        Probe::Failed => false,
        Probe::TimedOut => probe_once(client, ep, timeout).await == Probe::Passed,
    }
}

/// Probes forever (until the runtime shuts down).
pub async fn run(live: Arc<Live>, client: reqwest::Client) {
    loop {
        let snap = live.snapshot();
        let timeout = Duration::from_millis(snap.config.probe_timeout_ms);
        let probes = snap.endpoints.iter().map(|ep| {
            let client = &client;
            async move { (ep, probe(client, ep, timeout).await) }
        });
        for (ep, ok) in futures::future::join_all(probes).await {
            if ok {
                live.probe_passed(ep);
            } else {
                live.set_up(ep, false);
            }
        }
        tokio::time::sleep(Duration::from_millis(snap.config.probe_interval_ms)).await;
    }
}
