//! Leader election with a `coordination.k8s.io/v1` Lease, so that several replicas can run and exactly one
//! acts, with client-go's timing (lease duration 15 s, renew deadline 10 s, retry period 2 s):
//! - A standby takes the Lease only after it has seen the same record (holder, renewTime) unchanged for the
//!   lease duration plus a margin (one retry period) on its own clock.
//! - A leader renews every retry period; each attempt is bounded by the time left until its renew deadline
//!   (counted from the start of its last successful renewal). When the deadline passes without a renewal it
//!   stops acting at once: the write gate closes (no reconcile still running can write any more) and the
//!   controller is told to stop. It does so at least `lease duration + margin - renew deadline` (7 s) before
//!   any standby may take over.
//! - Writes use the Lease's resourceVersion, so two replicas cannot both win an acquisition.
//!
//! Not covered (no Kubernetes lease can cover it without fencing on the API server): a write sent before the
//! deadline but delayed in the network by more than that margin still lands after it.

use crate::gate::Gate;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What to do with the lease at one look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder went silent: take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it and is alive.
    Wait,
}

/// Decides from the holder and how long (our clock) the lease record has been unchanged: another holder's
/// lease is taken only once it has been unchanged for longer than `expiry` (lease duration + margin).
pub fn decide(
    holder: Option<&str>,
    unchanged_for: Duration,
    expiry: Duration,
    me: &str,
) -> Decision {
    match holder {
        None | Some("") => Decision::Acquire,
        Some(h) if h == me => Decision::Renew,
        Some(_) if unchanged_for > expiry => Decision::Acquire,
        Some(_) => Decision::Wait,
    }
}

/// How long the next renewal attempt may take: the time left until the renew deadline (counted from the start
/// of the last successful renewal), or None when it has passed (leadership is lost).
pub fn renew_budget(since_last_renewal: Duration, renew_deadline: Duration) -> Option<Duration> {
    renew_deadline
        .checked_sub(since_last_renewal)
        .filter(|left| !left.is_zero())
}

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct Election {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a silent holder keeps the lease (written into the Lease; standbys wait this plus `retry`).
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops acting (shorter than `lease_duration`).
    pub renew_deadline: Duration,
    /// How often to renew / retry.
    pub retry: Duration,
}

impl Election {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        Self {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }

    /// Checks that the timing is safe: retry < renew deadline < lease duration.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry.is_zero() || self.retry >= self.renew_deadline {
            return Err(format!(
                "--leader-retry-period ({:?}) must be positive and shorter than --leader-renew-deadline ({:?})",
                self.retry, self.renew_deadline
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--leader-renew-deadline ({:?}) must be shorter than --leader-lease-duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        Ok(())
    }

    /// How long a standby waits on an unchanged record of another holder.
    pub fn expiry(&self) -> Duration {
        self.lease_duration + self.retry
    }
}

/// Leadership held by this replica; the campaign keeps renewing the lease in the background.
pub struct Leadership {
    client: kube::Client,
    gate: Gate,
    election: Election,
    campaign: JoinHandle<()>,
    leading: watch::Receiver<bool>,
    lost: Arc<AtomicBool>,
}

/// Campaigns until this replica leads (`Some`), or until `stop` resolves first (`None`). `gate` is closed the
/// moment leadership is lost.
pub async fn lead(
    client: kube::Client,
    election: Election,
    gate: Gate,
    stop: impl Future<Output = ()>,
) -> Option<Leadership> {
    let (tx, mut leading) = watch::channel(false);
    let campaign = tokio::spawn(run(client.clone(), election.clone(), gate.clone(), tx));
    tracing::info!(identity = %election.identity, "waiting for leadership");
    tokio::select! {
        r = leading.wait_for(|l| *l) => {
            if r.is_err() {
                tracing::error!("leader election ended");
                return None;
            }
        }
        () = stop => {
            campaign.abort();
            return None;
        }
    }
    Some(Leadership {
        client,
        gate,
        election,
        campaign,
        leading,
        lost: Arc::new(AtomicBool::new(false)),
    })
}

impl Leadership {
    /// Resolves when this replica stops leading: the controller's shutdown future.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut leading = self.leading.clone();
        let lost = self.lost.clone();
        async move {
            let _ = leading.wait_for(|l| !*l).await;
            lost.store(true, Ordering::SeqCst);
        }
    }

    /// Whether leadership was lost (rather than given up at shutdown).
    pub fn was_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stops campaigning, then releases the lease unless it was lost (stopping first, or the campaign would take
    /// the released lease straight back).
    pub async fn step_down(self) {
        self.campaign.abort();
        self.gate.close();
        if !self.was_lost() {
            let bound = self.election.renew_deadline;
            if tokio::time::timeout(bound, release(self.client, &self.election))
                .await
                .is_err()
            {
                tracing::warn!("leader election: releasing the lease timed out");
            }
        }
    }
}

/// Runs until leadership is lost (or forever as a standby), publishing whether this replica leads on `tx`.
async fn run(client: kube::Client, e: Election, gate: Gate, tx: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    let mut seen: Option<LeaseRecord> = None;
    let mut seen_at = Instant::now();
    // Start of the last successful acquisition or renewal (None: not leading).
    let mut renewed: Option<Instant> = None;
    loop {
        let started = Instant::now();
        // A standby's attempt is bounded by the renew deadline too (nothing rides on it but the next retry).
        let budget = match renewed {
            Some(at) => match renew_budget(at.elapsed(), e.renew_deadline) {
                Some(b) => b,
                None => {
                    lose(&e, &gate, &tx);
                    return;
                }
            },
            None => e.renew_deadline,
        };
        match tokio::time::timeout(budget, step(&api, &e, &mut seen, &mut seen_at)).await {
            Ok(Ok(true)) => renewed = Some(started),
            Ok(Ok(false)) => {
                if renewed.is_some() {
                    // Someone else holds the lease now (only possible after our deadline passed elsewhere).
                    lose(&e, &gate, &tx);
                    return;
                }
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, lease = %e.name, "leader election: lease call failed");
            }
            Err(_) => {
                tracing::warn!(lease = %e.name, budget_s = budget.as_secs_f64(), "leader election: lease call timed out");
            }
        }
        if let Some(at) = renewed {
            if renew_budget(at.elapsed(), e.renew_deadline).is_none() {
                lose(&e, &gate, &tx);
                return;
            }
            if !*tx.borrow() {
                tracing::info!(identity = %e.identity, "leader election: leading");
                let _ = tx.send(true);
            }
        }
        // Sleep a retry period, but never past the renew deadline.
        let pause = match renewed {
            Some(at) => e.retry.min(e.renew_deadline.saturating_sub(at.elapsed())),
            None => e.retry,
        };
        tokio::time::sleep(pause).await;
    }
}

/// Stops acting: closes the write gate first, then tells the controller.
fn lose(e: &Election, gate: &Gate, tx: &watch::Sender<bool>) {
    gate.close();
    tracing::error!(identity = %e.identity, renew_deadline_s = e.renew_deadline.as_secs_f64(), "leader election: could not renew within the renew deadline; stopped acting");
    let _ = tx.send(false);
}

/// What identifies one version of the lease record for expiry: holder and renewTime.
type LeaseRecord = (Option<String>, Option<String>);

async fn step(
    api: &Api<Lease>,
    e: &Election,
    seen: &mut Option<LeaseRecord>,
    seen_at: &mut Instant,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let secs = i32::try_from(e.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&e.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(e.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(e.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let key = (
        spec.holder_identity.clone(),
        spec.renew_time.as_ref().map(|t| t.0.to_string()),
    );
    if seen.as_ref() != Some(&key) {
        *seen = Some(key);
        *seen_at = Instant::now();
    }
    // Another holder may have asked for a longer lease than ours: honour the longer one.
    let theirs = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let decision = decide(
        spec.holder_identity.as_deref(),
        seen_at.elapsed(),
        e.expiry().max(theirs + e.retry),
        &e.identity,
    );
    if decision == Decision::Wait {
        return Ok(false);
    }
    let mut new = spec.clone();
    if decision == Decision::Acquire {
        new.holder_identity = Some(e.identity.clone());
        new.acquire_time = Some(now.clone());
        new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    new.renew_time = Some(now);
    new.lease_duration_seconds = Some(secs);
    lease.spec = Some(new);
    // replace() sends metadata.resourceVersion: a concurrent writer makes this fail with 409.
    match api.replace(&e.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Gives the lease up if this replica holds it (a clean shutdown), so that a standby takes over at its next
/// retry instead of waiting out the lease duration. Best effort: a failure only means the standby waits.
pub async fn release(client: kube::Client, e: &Election) {
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&e.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(e.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    match api.replace(&e.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(identity = %e.identity, "leader election: lease released"),
        Err(err) => tracing::warn!(error = %err, "leader election: cannot release the lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_decisions() {
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, Duration::ZERO, d, "me"), Decision::Acquire);
        assert_eq!(decide(Some(""), Duration::ZERO, d, "me"), Decision::Acquire);
        assert_eq!(
            decide(Some("me"), Duration::from_secs(100), d, "me"),
            Decision::Renew
        );
        assert_eq!(
            decide(Some("other"), Duration::from_secs(3), d, "me"),
            Decision::Wait
        );
        assert_eq!(
            decide(Some("other"), Duration::from_secs(16), d, "me"),
            Decision::Acquire
        );
    }

    #[test]
    fn a_leader_stops_before_any_standby_may_take_over() {
        let e = Election::new("ns".into(), "l".into(), "me".into());
        assert!(e.validate().is_ok());
        // The leader gives up at the renew deadline, counted from the start of its last successful renewal;
        // a standby needs the record unchanged for the lease duration plus a retry period, counted from when
        // it saw the record, which is after that start.
        assert_eq!(
            renew_budget(Duration::from_secs(3), e.renew_deadline),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            renew_budget(Duration::from_secs(10), e.renew_deadline),
            None
        );
        assert_eq!(
            renew_budget(Duration::from_secs(11), e.renew_deadline),
            None
        );
        assert!(e.expiry() > e.renew_deadline + Duration::from_secs(5));
        assert_eq!(
            decide(Some("other"), e.lease_duration, e.expiry(), "me"),
            Decision::Wait,
            "the full lease duration alone is not enough"
        );
        assert_eq!(
            decide(
                Some("other"),
                e.expiry() + Duration::from_millis(1),
                e.expiry(),
                "me"
            ),
            Decision::Acquire
        );
    }

    #[test]
    fn unsafe_timing_is_refused() {
        let base = Election::new("ns".into(), "l".into(), "me".into());
        for (lease, renew, retry) in [(10, 10, 2), (10, 15, 2), (15, 10, 10), (15, 10, 0)] {
            let e = Election {
                lease_duration: Duration::from_secs(lease),
                renew_deadline: Duration::from_secs(renew),
                retry: Duration::from_secs(retry),
                ..base.clone()
            };
            let err = e.validate().expect_err("unsafe");
            assert!(err.starts_with("--leader-"), "{err}");
        }
    }
}
