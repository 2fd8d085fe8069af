//! The controller shell: observe the cluster, ask [`crate::plan`] what to do, carry it out with server-side
//! apply (owner references on everything), write the status subresource, record Events and metrics.
//! `reconcile` and `error_policy` are plain functions, as in kube-rs/controller-rs.

use crate::applied::{self, Applied};
use crate::config::OperatorConfig;
use crate::desired;
use crate::error::{Error, Result};
use crate::failover::{self, NodeView};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::observe;
use crate::plan::{self, Inputs, Plan};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use vp_api::labels::{
    self, COMPONENT, COMPONENT_AGGREGATOR, COMPONENT_VARIANT, ENSEMBLE, MANAGED_BY, MANAGER,
    VARIANT,
};
use vp_api::{EnsembleManifest, VariantEnsemble};

/// Requeue period of a whole, healthy ensemble (picks up manifest ConfigMap edits and node label changes).
const RESYNC: Duration = Duration::from_secs(300);
/// Requeue period while something is missing.
const RETRY_DEGRADED: Duration = Duration::from_secs(15);
/// Trailing-edge debounce of reconcile triggers: the several updates a new pod goes through (created, bound,
/// running, ready) cost one reconcile, not four. Short next to the failover budget (grace + 5 s).
const DEBOUNCE: Duration = Duration::from_millis(500);

/// What every reconcile shares.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Defaults.
    pub config: OperatorConfig,
    /// Metrics.
    pub metrics: Metrics,
    /// Event recorder.
    pub recorder: Recorder,
    /// Node liveness.
    pub nodes: Arc<NodeView>,
    /// All variant and aggregator pods managed by the operator (capacity used by other ensembles; which
    /// ensembles a failed node touches).
    pub pods: Store<Pod>,
    /// What was applied lately (skips applies that would change nothing; expires at the resync period).
    pub applied: Applied,
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// What server-side apply needs of a namespaced object.
trait Applicable:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Serialize
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<T> Applicable for T where
    T: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// Server-side applies `obj`; returns the applied object's version (see [`applied::version`]).
async fn apply<K: Applicable>(client: &Client, ns: &str, obj: &K) -> Result<Option<String>> {
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let applied = api
        .patch(&name, &apply_params(), &Patch::Apply(obj))
        .await
        .map_err(|e| Error::kube(format!("applying {} {ns}/{name}", K::kind(&())), e))?;
    Ok(applied::version(applied.meta()))
}

/// The live versions of the objects a reconcile may apply, by kind and name (absent: the object does not exist).
type Live = BTreeMap<(&'static str, String), String>;

/// Applies `obj` unless this replica applied the same object lately and nobody changed it since (see
/// [`crate::applied`]).
async fn apply_changed<K: Applicable>(ctx: &Context, ns: &str, obj: &K, live: &Live) -> Result<()> {
    let kind = kind_name::<K>();
    let key: applied::Key = (kind, ns.to_string(), obj.name_any());
    let current = live.get(&(kind, obj.name_any())).map(String::as_str);
    let hash = applied::digest(obj);
    let now = std::time::Instant::now();
    if let Some(h) = hash
        && !ctx.applied.needed(&key, h, current, now)
    {
        ctx.metrics.applies.with_label_values(&["skipped"]).inc();
        return Ok(());
    }
    let result = apply(&ctx.client, ns, obj).await;
    match (&result, hash) {
        (Ok(version), Some(h)) => ctx.applied.record(key, h, version.clone(), now),
        _ => ctx.applied.forget(&key),
    }
    ctx.metrics
        .applies
        .with_label_values(&[if result.is_ok() { "applied" } else { "failed" }])
        .inc();
    result.map(|_| ())
}

fn kind_name<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "Service" => "Service",
        "ConfigMap" => "ConfigMap",
        "Deployment" => "Deployment",
        "Pod" => "Pod",
        _ => "Other",
    }
}

/// Whether a pod belongs to a ReplicaSet of the named Deployment (`<deployment>-<hash>`).
fn made_by_replica_set_of(meta: &kube::api::ObjectMeta, deployment: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| {
        o.kind == "ReplicaSet"
            && o.name
                .strip_prefix(deployment)
                .is_some_and(|rest| rest.starts_with('-'))
    })
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Reads the manifest named by the spec: Ok(Ok) parsed, Ok(Err) a user problem for the status, Err an API
/// failure worth a retry.
async fn read_manifest(
    client: &Client,
    ens: &VariantEnsemble,
    ns: &str,
) -> Result<Result<(EnsembleManifest, String), String>> {
    let src = &ens.spec.model.manifest;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let Some(cm) = api
        .get_opt(&src.config_map)
        .await
        .map_err(|e| Error::kube("reading the manifest ConfigMap", e))?
    else {
        return Ok(Err(format!(
            "manifest ConfigMap {ns}/{} not found",
            src.config_map
        )));
    };
    let Some(text) = cm.data.as_ref().and_then(|d| d.get(&src.key)) else {
        return Ok(Err(format!(
            "manifest ConfigMap {ns}/{} has no data key {:?}",
            src.config_map, src.key
        )));
    };
    Ok(EnsembleManifest::from_yaml(text)
        .map(|m| (m, text.clone()))
        .map_err(|e| format!("{ns}/{}[{}]: {e}", src.config_map, src.key)))
}

/// Reconciles one ensemble: observe, plan, apply, report.
pub async fn reconcile(ens: Arc<VariantEnsemble>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.duration.start_timer();
    ctx.metrics.reconciles.with_label_values::<&str>(&[]).inc();
    let name = ens.name_any();
    let ns = ens
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    if ens.metadata.deletion_timestamp.is_some() {
        // Owner references make the garbage collector remove everything; only our gauges remain to drop.
        ctx.metrics.forget_ensemble(&ns, &name);
        ctx.applied.forget_prefixed(&ns, &format!("{name}-"));
        return Ok(Action::await_change());
    }
    let client = &ctx.client;

    // Observe.
    let grace = failover::grace_of(&ens);
    let health = failover::judged(&ctx.nodes, grace);
    let mut used: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for p in ctx.pods.state() {
        let other = p.namespace().as_deref() != Some(ns.as_str())
            || p.labels().get(ENSEMBLE) != Some(&name);
        if let (true, Some(node)) = (other, observe::pod_node(&p)) {
            let (c, m) = observe::pod_requests(&p);
            let u = used.entry(node.to_string()).or_default();
            u.0 += c;
            u.1 += m;
        }
    }
    let nodes: Vec<_> = ctx
        .nodes
        .nodes()
        .iter()
        .map(|n: &Arc<Node>| {
            let h = health
                .get(&n.name_any())
                .cloned()
                .unwrap_or(Health::Healthy);
            observe::node_info(n, h, used.get(&n.name_any()).copied().unwrap_or_default())
        })
        .collect();
    let uid = ens.uid();
    let owned = |meta: &kube::api::ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == uid.as_ref())
    };
    // The reads are independent: one round trip for all of them.
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let svc_api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let deploy_api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let lp = ListParams::default().labels(&format!("{ENSEMBLE}={name}"));
    let agg_name = desired::aggregator_name(&name);
    let (manifest, pods, services, deployment, agg_config) = tokio::try_join!(
        read_manifest(client, &ens, &ns),
        async {
            pods_api
                .list(&lp)
                .await
                .map_err(|e| Error::kube("listing pods", e))
        },
        async {
            svc_api
                .list(&lp)
                .await
                .map_err(|e| Error::kube("listing services", e))
        },
        async {
            deploy_api
                .get_metadata_opt(&agg_name)
                .await
                .map_err(|e| Error::kube("reading the aggregator deployment", e))
        },
        async {
            cm_api
                .get_metadata_opt(&agg_name)
                .await
                .map_err(|e| Error::kube("reading the aggregator configmap", e))
        },
    )?;
    let component = |p: &Pod| p.labels().get(COMPONENT).cloned().unwrap_or_default();
    let (pods, aggregator_pods): (Vec<Pod>, Vec<Pod>) = pods
        .items
        .into_iter()
        .filter(|p| owned(&p.metadata) || made_by_replica_set_of(&p.metadata, &agg_name))
        .partition(|p| component(p) == COMPONENT_VARIANT && owned(&p.metadata));
    let aggregator_pods: Vec<Pod> = aggregator_pods
        .into_iter()
        .filter(|p| component(p) == COMPONENT_AGGREGATOR)
        .collect();
    let services: Vec<Service> = services
        .items
        .into_iter()
        .filter(|s| owned(&s.metadata))
        .collect();
    // What exists now, and in which version: an object edited or deleted by someone else is applied again.
    let mut live = Live::new();
    for s in &services {
        live.extend(applied::version(&s.metadata).map(|v| (("Service", s.name_any()), v)));
    }
    live.extend(
        deployment
            .as_ref()
            .and_then(|d| applied::version(&d.metadata))
            .map(|v| (("Deployment", agg_name.clone()), v)),
    );
    live.extend(
        agg_config
            .as_ref()
            .and_then(|c| applied::version(&c.metadata))
            .map(|v| (("ConfigMap", agg_name.clone()), v)),
    );
    let services: Vec<String> = services
        .iter()
        .filter(|s| s.labels().get(COMPONENT).map(String::as_str) == Some(COMPONENT_VARIANT))
        .filter_map(|s| s.labels().get(VARIANT).cloned())
        .collect();

    // Decide.
    let plan = plan::plan(&Inputs {
        ensemble: &ens,
        manifest: manifest
            .as_ref()
            .map(|(m, t)| (m, t.as_str()))
            .map_err(Clone::clone),
        nodes: &nodes,
        pods: &pods,
        services: &services,
        aggregator_pods: &aggregator_pods,
        config: &ctx.config,
        now: Timestamp::now(),
    });

    // Act, report.
    let result = carry_out(&ctx, &ns, &name, &plan, &live).await;
    write_status(&ctx, &ens, &ns, &plan).await?;
    publish(&ctx, &ens, &plan).await;
    record(&ctx, &ns, &name, &plan);
    result?;
    // Whole: every variant serves and (through its Service) an aggregator on a live node answers.
    let whole = plan.status.available_variants == plan.status.desired_variants
        && plan
            .status
            .condition(vp_api::ConditionType::Ready)
            .is_some_and(|c| c.status == "True");
    Ok(Action::requeue(if whole { RESYNC } else { RETRY_DEGRADED }))
}

/// Deletes first (a failed node's pod must go before its replacement appears), then applies.
async fn carry_out(ctx: &Context, ns: &str, name: &str, plan: &Plan, live: &Live) -> Result<()> {
    let client = &ctx.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for d in &plan.delete {
        let params = if d.force {
            DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            }
        } else {
            DeleteParams::default()
        };
        tracing::info!(pod = %d.name, namespace = ns, force = d.force, why = %d.why, "deleting variant pod");
        match pods.delete(&d.name, &params).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("deleting pod {ns}/{}", d.name), e)),
        }
    }
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    for v in &plan.delete_services {
        let svc = desired::variant_service_name(name, v);
        ctx.applied
            .forget(&("Service", ns.to_string(), svc.clone()));
        match services.delete(&svc, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("deleting service {ns}/{svc}"), e)),
        }
    }
    // Independent objects go out concurrently: a reconcile costs about one round trip per kind, not per object.
    use futures::future::try_join_all;
    for pod in &plan.create {
        tracing::info!(pod = %pod.name_any(), namespace = ns, node = ?observe::pod_node(pod), "creating variant pod");
    }
    let pods = try_join_all(plan.create.iter().map(|p| apply(client, ns, p)));
    let services = try_join_all(
        plan.services
            .iter()
            .map(|s| apply_changed(ctx, ns, s, live)),
    );
    let aggregator = async {
        if let Some(agg) = &plan.aggregator {
            tokio::try_join!(
                apply_changed(ctx, ns, &agg.configmap, live),
                apply_changed(ctx, ns, &agg.deployment, live),
                apply_changed(ctx, ns, &agg.service, live)
            )?;
        }
        Ok::<(), Error>(())
    };
    tokio::try_join!(pods, services, aggregator)?;
    Ok(())
}

async fn write_status(ctx: &Context, ens: &VariantEnsemble, ns: &str, plan: &Plan) -> Result<()> {
    if ens.status.as_ref() == Some(&plan.status) {
        return Ok(());
    }
    let api: Api<VariantEnsemble> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({
        "apiVersion": format!("{}/{}", vp_api::GROUP, vp_api::VERSION),
        "kind": "VariantEnsemble",
        "status": plan.status,
    });
    api.patch_status(&ens.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await
        .map_err(|e| Error::kube("writing status", e))?;
    Ok(())
}

async fn publish(ctx: &Context, ens: &VariantEnsemble, plan: &Plan) {
    let reference = ens.object_ref(&());
    for note in &plan.events {
        let ev = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.message.chars().take(1000).collect()),
            action: note.action.into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, reason = note.reason, "cannot record event");
        }
    }
}

fn record(ctx: &Context, ns: &str, name: &str, plan: &Plan) {
    let m = &ctx.metrics;
    for r in &plan.reschedules {
        tracing::warn!(namespace = ns, ensemble = name, variant = %r.variant, reason = r.reason, from = ?r.from, to = ?r.to, "variant rescheduled");
        m.reschedules.with_label_values(&[r.reason]).inc();
    }
    for (variant, reason, d) in &plan.recovered {
        tracing::info!(namespace = ns, ensemble = name, %variant, %reason, seconds = d.as_secs_f64(), "replacement ready");
        m.failover
            .with_label_values(&[reason.as_str()])
            .observe(d.as_secs_f64());
    }
    let s = &plan.status;
    m.available
        .with_label_values(&[ns, name])
        .set(f64::from(s.available_variants));
    m.desired
        .with_label_values(&[ns, name])
        .set(f64::from(s.desired_variants));
    match s.expected_accuracy {
        Some(a) => m.accuracy.with_label_values(&[ns, name]).set(a),
        None => m.accuracy.with_label_values(&[ns, name]).set(0.0),
    }
}

/// Counts the failure and retries soon.
pub fn error_policy(ens: Arc<VariantEnsemble>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(ensemble = %ens.name_any(), namespace = ?ens.namespace(), error = %err, "reconcile failed");
    ctx.metrics.errors.with_label_values(&[err.label()]).inc();
    Action::requeue(Duration::from_secs(5))
}

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
    let identity = scope.identity.clone();
    fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = scope.namespace.as_deref();
    // Variant and aggregator pods: capacity used on each node, and which ensembles a failed node touches.
    let managed = format!("{MANAGED_BY}={MANAGER}");
    let (node_store, node_writer) = reflector::store::<Node>();
    let (lease_store, lease_writer) = reflector::store::<Lease>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .applied_objects();
    let leases = watcher(
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(lease_writer)
    .applied_objects();
    let pods = watcher(
        api::<Pod>(&client, ns),
        watcher::Config::default().labels(&managed),
    )
    .default_backoff()
    .reflect(pod_writer)
    .applied_objects();
    tokio::spawn(drain(nodes, "nodes"));
    tokio::spawn(drain(leases, "leases"));
    tokio::spawn(drain(pods, "pods"));
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
    let view = Arc::new(NodeView::new(node_store, lease_store));
    let ctx = Arc::new(Context {
        client: client.clone(),
        config,
        metrics: metrics.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: Some(identity),
            },
        ),
        nodes: view.clone(),
        pods: pod_store.clone(),
        applied: Applied::new(RESYNC),
    });
    let (tx, rx) = mpsc::channel::<ObjectRef<VariantEnsemble>>(1024);
    let triggers =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let owned_pods = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
    let controller = Controller::new(
        api::<VariantEnsemble>(&client, ns),
        watcher::Config::default(),
    )
    // Pods by their ensemble label rather than owner: aggregator pods belong to a ReplicaSet, and one bound to a
    // failed node must be seen (and deleted) at once.
    .watches(api::<Pod>(&client, ns), owned_pods.clone(), |pod: Pod| {
        let ns = pod.namespace();
        pod.labels()
            .get(ENSEMBLE)
            .zip(ns)
            .map(|(e, ns)| ObjectRef::new(e).within(&ns))
    })
    .owns(api::<Deployment>(&client, ns), owned_pods.clone())
    // Services and ConfigMaps only so that deleting one by hand brings it back at once.
    .owns(api::<Service>(&client, ns), owned_pods.clone())
    .owns(api::<ConfigMap>(&client, ns), owned_pods)
    .reconcile_on(triggers)
    .with_config(
        kube::runtime::controller::Config::default()
            .debounce(DEBOUNCE)
            .concurrency(scope.concurrency),
    )
    .graceful_shutdown_on(shutdown);
    tokio::spawn(failover::detect(
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
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    tracing::info!("controller stopped");
}

async fn drain<S, T>(stream: S, what: &'static str)
where
    S: futures::Stream<Item = Result<T, watcher::Error>>,
{
    use futures::StreamExt;
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            tracing::warn!(what, error = %e, "watch error (retrying)");
        }
    }
}
