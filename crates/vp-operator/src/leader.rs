//! Leader election with a `coordination.k8s.io/v1` Lease, so that several replicas can run and exactly one
//! acts. Like client-go, expiry is judged on this replica's own clock: a holder whose (holder, renewTime) has
//! not changed for the lease duration is considered gone. Writes use the Lease's resourceVersion, so two
//! replicas cannot both win. A leader that cannot renew within the duration steps down.

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

/// Decides from the holder and how long (our clock) the lease has been unchanged.
pub fn decide(
    holder: Option<&str>,
    unchanged_for: Duration,
    lease_duration: Duration,
    me: &str,
) -> Decision {
    match holder {
        None | Some("") => Decision::Acquire,
        Some(h) if h == me => Decision::Renew,
        Some(_) if unchanged_for > lease_duration => Decision::Acquire,
        Some(_) => Decision::Wait,
    }
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
    /// How long a silent holder keeps the lease.
    pub lease_duration: Duration,
    /// How often to renew / retry.
    pub retry: Duration,
}

/// Leadership held by this replica; the campaign keeps renewing the lease in the background.
pub struct Leadership {
    client: kube::Client,
    election: Election,
    campaign: JoinHandle<()>,
    leading: watch::Receiver<bool>,
    lost: Arc<AtomicBool>,
}

/// Campaigns until this replica leads (`Some`), or until `stop` resolves first (`None`).
pub async fn lead(
    client: kube::Client,
    election: Election,
    stop: impl Future<Output = ()>,
) -> Option<Leadership> {
    let (tx, mut leading) = watch::channel(false);
    let campaign = tokio::spawn(run(client.clone(), election.clone(), tx));
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
        if !self.was_lost() {
            release(self.client, &self.election).await;
        }
    }
}

/// Runs forever, publishing whether this replica leads on `tx`.
async fn run(client: kube::Client, e: Election, tx: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    let mut seen: Option<(Option<String>, Option<String>)> = None;
    let mut seen_at = Instant::now();
    let mut last_renew = Instant::now();
    loop {
        let outcome = step(&api, &e, &mut seen, &mut seen_at).await;
        let leading = match outcome {
            Ok(leading) => {
                if leading {
                    last_renew = Instant::now();
                }
                leading
            }
            Err(err) => {
                tracing::warn!(error = %err, lease = %e.name, "leader election: lease call failed");
                // Keep leading only while the last successful renewal is within the lease duration.
                *tx.borrow() && last_renew.elapsed() < e.lease_duration
            }
        };
        if *tx.borrow() != leading {
            tracing::info!(identity = %e.identity, leading, "leader election: leadership changed");
            let _ = tx.send(leading);
        }
        tokio::time::sleep(e.retry).await;
    }
}

async fn step(
    api: &Api<Lease>,
    e: &Election,
    seen: &mut Option<(Option<String>, Option<String>)>,
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
    let decision = decide(
        spec.holder_identity.as_deref(),
        seen_at.elapsed(),
        e.lease_duration,
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
}
