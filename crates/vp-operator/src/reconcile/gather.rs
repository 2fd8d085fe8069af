//! Step 1 of a reconcile: every read, concurrently (one round trip for all of them). Nodes come judged with the
//! ensemble's grace and with the capacity other ensembles use on them; the ensemble's own pods, Services and
//! aggregator objects come from the API server (the caches may lag behind the operator's own writes).

use crate::applied::{self, ssa::Live};
use crate::desired;
use crate::error::{Error, Result};
use crate::failover;
use crate::health::Health;
use crate::observe;
use crate::placement::NodeInfo;
use crate::reconcile::Context;
use futures::future::try_join_all;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, ObjectMeta};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use vp_api::labels::{COMPONENT, COMPONENT_AGGREGATOR, COMPONENT_VARIANT, ENSEMBLE, VARIANT};
use vp_api::{EnsembleManifest, VariantEnsemble};

/// What a reconcile saw.
pub struct Gathered {
    /// The manifest and its text, or why it could not be read (a user problem, for the status).
    pub manifest: Result<(EnsembleManifest, String), String>,
    /// Every node, judged with the ensemble's grace, with what other ensembles use on it.
    pub nodes: Vec<NodeInfo>,
    /// The ensemble's variant pods.
    pub pods: Vec<Pod>,
    /// The ensemble's aggregator pods (made by its Deployment's ReplicaSets).
    pub aggregator_pods: Vec<Pod>,
    /// Variants that have a Service.
    pub services: Vec<String>,
    /// Versions of the live objects the apply step may skip.
    pub live: Live,
}

/// CPU and memory (cores, bytes) requested on a node.
#[derive(Clone, Copy, Debug, Default)]
struct Used {
    cpu: f64,
    memory: f64,
}

/// Reads everything the decision needs.
pub async fn gather(ctx: &Context, ens: &VariantEnsemble, ns: &str) -> Result<Gathered> {
    let name = ens.name_any();
    let client = &ctx.client;
    let lp = ListParams::default().labels(&format!("{ENSEMBLE}={name}"));
    let agg_name = desired::aggregator_name(&name);
    let policy_names = [desired::variants_policy_name(&name), agg_name.clone()];
    let (manifest, pods, services, deployment, agg_config, policies, budget) = tokio::try_join!(
        read_manifest(client, ens, ns),
        async {
            Api::<Pod>::namespaced(client.clone(), ns)
                .list(&lp)
                .await
                .map_err(|e| Error::kube("listing pods", e))
        },
        async {
            Api::<Service>::namespaced(client.clone(), ns)
                .list(&lp)
                .await
                .map_err(|e| Error::kube("listing services", e))
        },
        async {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .get_metadata_opt(&agg_name)
                .await
                .map_err(|e| Error::kube("reading the aggregator deployment", e))
        },
        async {
            Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_metadata_opt(&agg_name)
                .await
                .map_err(|e| Error::kube("reading the aggregator configmap", e))
        },
        try_join_all(policy_names.iter().map(|n| async move {
            Api::<NetworkPolicy>::namespaced(client.clone(), ns)
                .get_metadata_opt(n)
                .await
                .map_err(|e| Error::kube("reading a network policy", e))
        })),
        async {
            Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
                .get_metadata_opt(&agg_name)
                .await
                .map_err(|e| Error::kube("reading the aggregator disruption budget", e))
        },
    )?;
    let uid = ens.uid();
    let owned = |meta: &ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == uid.as_ref())
    };
    let component = |p: &Pod| p.labels().get(COMPONENT).cloned().unwrap_or_default();
    let (pods, aggregator_pods): (Vec<Pod>, Vec<Pod>) = pods
        .items
        .into_iter()
        .filter(|p| owned(&p.metadata) || made_by_replica_set_of(&p.metadata, &agg_name))
        .partition(|p| component(p) == COMPONENT_VARIANT && owned(&p.metadata));
    let aggregator_pods = aggregator_pods
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
    let version = |kind: &'static str, meta: Option<&ObjectMeta>| {
        meta.and_then(applied::version)
            .map(|v| ((kind, agg_name.clone()), v))
    };
    live.extend(version(
        "Deployment",
        deployment.as_ref().map(|d| &d.metadata),
    ));
    live.extend(version(
        "ConfigMap",
        agg_config.as_ref().map(|c| &c.metadata),
    ));
    live.extend(version(
        "PodDisruptionBudget",
        budget.as_ref().map(|b| &b.metadata),
    ));
    for (n, p) in policy_names.iter().zip(&policies) {
        live.extend(
            p.as_ref()
                .and_then(|p| applied::version(&p.metadata))
                .map(|v| (("NetworkPolicy", n.clone()), v)),
        );
    }
    Ok(Gathered {
        manifest,
        nodes: nodes(ctx, ens, ns, &name),
        pods,
        aggregator_pods,
        services: services
            .iter()
            .filter(|s| s.labels().get(COMPONENT).map(String::as_str) == Some(COMPONENT_VARIANT))
            .filter_map(|s| s.labels().get(VARIANT).cloned())
            .collect(),
        live,
    })
}

/// Every node judged with the ensemble's grace, with the capacity the other ensembles' pods use on it.
fn nodes(ctx: &Context, ens: &VariantEnsemble, ns: &str, name: &str) -> Vec<NodeInfo> {
    let health = failover::judged(&ctx.nodes, failover::grace_of(ens));
    let mut used: BTreeMap<String, Used> = BTreeMap::new();
    for p in ctx.pods.state() {
        let other = p.namespace().as_deref() != Some(ns)
            || p.labels().get(ENSEMBLE).map(String::as_str) != Some(name);
        if let (true, Some(node)) = (other, observe::pod_node(&p)) {
            let (cpu, memory) = observe::pod_requests(&p);
            let u = used.entry(node.to_string()).or_default();
            u.cpu += cpu;
            u.memory += memory;
        }
    }
    ctx.nodes
        .nodes()
        .iter()
        .map(|n: &Arc<Node>| {
            let h = health
                .get(&n.name_any())
                .cloned()
                .unwrap_or(Health::Healthy);
            let u = used.get(&n.name_any()).copied().unwrap_or_default();
            observe::node_info(n, h, (u.cpu, u.memory))
        })
        .collect()
}

/// Whether a pod belongs to a ReplicaSet of the named Deployment (`<deployment>-<hash>`).
fn made_by_replica_set_of(meta: &ObjectMeta, deployment: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| {
        o.kind == "ReplicaSet"
            && o.name
                .strip_prefix(deployment)
                .is_some_and(|rest| rest.starts_with('-'))
    })
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
