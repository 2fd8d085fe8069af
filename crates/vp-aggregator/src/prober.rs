//! Background health probes: asks every configured variant's `/v2/health/ready` each `probe_interval_ms`, so a
//! dead or hung variant is skipped before requests wait on it, and a restarted one rejoins within one period;
//! an ejected variant (see [`crate::outlier`]) is re-admitted by the first passed probe after its ejection.

use crate::state::Live;
use std::sync::Arc;
use std::time::Duration;

/// Probes forever (until the runtime shuts down).
pub async fn run(live: Arc<Live>, client: reqwest::Client) {
    loop {
        let snap = live.snapshot();
        let timeout = Duration::from_millis(snap.config.probe_timeout_ms);
        let probes = snap.endpoints.iter().map(|ep| {
            let client = &client;
            async move {
                let ok = matches!(
                    tokio::time::timeout(timeout, client.get(&ep.ready_url).send()).await,
                    Ok(Ok(r)) if r.status().is_success()
                );
                (ep, ok)
            }
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
