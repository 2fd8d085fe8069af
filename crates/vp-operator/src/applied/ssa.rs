//! Server-side apply of the objects a reconcile wants, with the [`Applied`] memo: an apply is skipped when
//! this replica applied the same object lately and nobody changed it since.

use super::{Applied, Key, digest, version};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use std::collections::BTreeMap;
use vp_api::labels::MANAGER;

/// Server-side apply as the operator's field manager, taking over fields another manager set.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// What server-side apply needs of a namespaced object.
pub trait Applicable:
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

/// The live versions of the objects a reconcile may apply, by kind and name (absent: the object does not
/// exist).
pub type Live = BTreeMap<(&'static str, String), String>;

/// Server-side applies `obj`; returns the applied object's version (see [`version`]).
pub async fn apply<K: Applicable>(client: &Client, ns: &str, obj: &K) -> Result<Option<String>> {
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let applied = api
        .patch(&name, &apply_params(), &Patch::Apply(obj))
        .await
        .map_err(|e| Error::kube(format!("applying {} {ns}/{name}", K::kind(&())), e))?;
    Ok(version(applied.meta()))
}

/// Applies `obj` unless this replica applied the same object lately and nobody changed it since.
pub async fn apply_changed<K: Applicable>(
    client: &Client,
    memo: &Applied,
    metrics: &Metrics,
    ns: &str,
    obj: &K,
    live: &Live,
) -> Result<()> {
    let kind = kind_name::<K>();
    let key: Key = (kind, ns.to_string(), obj.name_any());
    let current = live.get(&(kind, obj.name_any())).map(String::as_str);
    let hash = digest(obj);
    let now = std::time::Instant::now();
    if let Some(h) = hash
        && !memo.needed(&key, h, current, now)
    {
        metrics.applies.with_label_values(&["skipped"]).inc();
        return Ok(());
    }
    let result = apply(client, ns, obj).await;
    match (&result, hash) {
        (Ok(version), Some(h)) => memo.record(key, h, version.clone(), now),
        _ => memo.forget(&key),
    }
    metrics
        .applies
        .with_label_values(&[if result.is_ok() { "applied" } else { "failed" }])
        .inc();
    result.map(|_| ())
}

/// The memo's name of a kind.
pub fn kind_name<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "Service" => "Service",
        "ConfigMap" => "ConfigMap",
        "Deployment" => "Deployment",
        "Pod" => "Pod",
        "NetworkPolicy" => "NetworkPolicy",
        "PodDisruptionBudget" => "PodDisruptionBudget",
        _ => "Other",
    }
}
