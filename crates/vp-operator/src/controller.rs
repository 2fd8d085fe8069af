//! The controller's wiring: the watches (nodes, node Leases, and one shared watch of the managed pods that
//! feeds both the pod cache and the controller's triggers, as kube's `shared_stream_controllers` example
//! does), the failure detector, and the kube-rs `Controller` that runs [`crate::reconcile`].

use crate::applied::Applied;
use crate::config::OperatorConfig;
use crate::failover::{self, NodeView};
use crate::gate::Gate;
use crate::metrics::Metrics;
use crate::reconcile::{self, Context, RESYNC};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use vp_api::VariantEnsemble;
use vp_api::labels::{self, ENSEMBLE, MANAGED_BY, MANAGER};

/// Trailing-edge debounce of reconcile triggers: the several updates a new pod goes through (created, bound,
/// running, ready) cost one reconcile, not four. Short next to the failover budget (grace + 5 s).
const DEBOUNCE: Duration = Duration::from_millis(500);
/// Pod events buffered for the controller's subscription to the shared pod watch.
const SHARED_BUFFER: usize = 1024;
/// Reconcile triggers buffered from the failure detector and pod deletions.
const TRIGGER_BUFFER: usize = 1024;

/// Who runs and what it watches.
#[derive(Clone, Debug)]
pub struct Scope {
    /// This replica's identity (Event reporter instance).
    pub identity: String,
    /// Watch only this namespace's ensembles (None: all namespaces). Nodes and node Leases are always
    /// cluster-wide.
    pub namespace: Option<String>,
    /// At most this many ensembles reconcile at once (0: no limit).
    pub concurrency: u16,
    /// Failure detection: zone thresholds, eviction rate limit, staleness of the view.
    pub failover: failover::Settings,
    /// Opens and closes every write (closed when leadership is lost).
    pub gate: Gate,
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Starts the watches and runs the controller until `shutdown` resolves. `ready` turns true once the caches
/// have synced.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Metrics,
    scope: Scope,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = scope.namespace.as_deref();
    let (tx, rx) = mpsc::channel::<ObjectRef<VariantEnsemble>>(TRIGGER_BUFFER);
    let (node_store, node_writer) = reflector::store::<Node>();
    let (lease_store, lease_writer) = reflector::store::<Lease>();
    // Variant and aggregator pods, watched once: the cache (capacity used on each node, which ensembles a
    // failed node touches) and the controller's triggers share this one stream.
    let (pod_store, pod_writer) = reflector::store_shared::<Pod>(SHARED_BUFFER);
    let Some(pod_events) = pod_writer.subscribe() else {
        tracing::error!("the pod store is not shared; cannot subscribe to it");
        return;
    };
    let nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer);
    let leases = watcher(
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(lease_writer);
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
    let pods = watcher(api::<Pod>(&client, ns), managed.clone())
        .default_backoff()
        .reflect_shared(pod_writer);
    let view = Arc::new(NodeView::new(
        node_store.clone(),
        lease_store.clone(),
        scope.failover.clone(),
    ));
    tokio::spawn(drain(nodes, "nodes", None, None));
    tokio::spawn(drain(leases, "leases", None, Some(view.clone())));
    // The shared stream carries only live objects; a pod that vanishes at once (force-deleted) triggers its
    // ensemble from here.
    tokio::spawn(drain(pods, "pods", Some(tx.clone()), None));
    for (what, r) in [
        ("nodes", node_store.wait_until_ready().await),
        ("leases", lease_store.wait_until_ready().await),
        ("pods", pod_store.wait_until_ready().await),
    ] {
        if r.is_err() {
            tracing::error!(what, "watch ended before its cache synced");
            return;
        }
    }
    view.api_answered();
    view.lease_event();
    let probe = tokio::spawn(failover::probe(client.clone(), view.clone()));
    let ctx = Arc::new(Context {
        client: client.clone(),
        config,
        metrics: metrics.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: Some(scope.identity.clone()),
            },
        ),
        nodes: view.clone(),
        pods: pod_store.clone(),
        applied: Applied::new(RESYNC),
        gate: scope.gate.clone(),
    });
    let triggers =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let controller = Controller::new(
        api::<VariantEnsemble>(&client, ns),
        watcher::Config::default(),
    )
    // Pods by their ensemble label rather than owner: aggregator pods belong to a ReplicaSet, and one bound to a
    // failed node must be seen (and deleted) at once.
    .watches_shared_stream(pod_events, |pod: Arc<Pod>| ensemble_of(pod.as_ref()))
    .owns(api::<Deployment>(&client, ns), managed.clone())
    // Services and ConfigMaps only so that deleting one by hand brings it back at once.
    .owns(api::<Service>(&client, ns), managed.clone())
    .owns(api::<ConfigMap>(&client, ns), managed)
    .reconcile_on(triggers)
    .with_config(
        kube::runtime::controller::Config::default()
            .debounce(DEBOUNCE)
            .concurrency(scope.concurrency),
    )
    .graceful_shutdown_on(shutdown);
    let detector = tokio::spawn(failover::detect(
        view,
        controller.store(),
        pod_store,
        metrics,
        tx,
    ));
    ready.store(true, Ordering::SeqCst);
    tracing::info!(labels = %labels::APP, "controller started");
    use futures::StreamExt;
    controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    detector.abort();
    probe.abort();
    tracing::info!("controller stopped");
}

/// Drives a watch (its reflector fills the cache) and logs its errors. With `deleted`, a deleted pod triggers a
/// reconcile of its ensemble; with `seen`, every event counts as contact (the node Lease watch's freshness).
async fn drain<S, K>(
    stream: S,
    what: &'static str,
    deleted: Option<mpsc::Sender<ObjectRef<VariantEnsemble>>>,
    seen: Option<Arc<NodeView>>,
) where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    K: Resource + 'static,
{
    use futures::StreamExt;
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        if let (Some(view), Ok(_)) = (&seen, &item) {
            view.lease_event();
        }
        match item {
            Err(e) => tracing::warn!(what, error = %e, "watch error (retrying)"),
            Ok(watcher::Event::Delete(obj)) => {
                let owner = deleted.as_ref().zip(ensemble_of(&obj));
                if let Some((tx, r)) = owner
                    && tx.send(r).await.is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}

/// The ensemble a managed pod belongs to (by label: aggregator pods are owned by a ReplicaSet).
fn ensemble_of<K: Resource>(obj: &K) -> Option<ObjectRef<VariantEnsemble>> {
    let meta = obj.meta();
    let ns = meta.namespace.as_deref()?;
    meta.labels
        .as_ref()?
        .get(ENSEMBLE)
        .map(|e| ObjectRef::new(e).within(ns))
}
