//! The cluster objects an ensemble should have, built without any I/O: one Pod per variant pinned to its node,
//! a stable Service per variant, and the aggregator's ConfigMap (its config file plus a copy of the manifest),
//! Deployment and Service. Every object carries the standard labels and a controller owner reference to the
//! ensemble, so deleting the ensemble garbage-collects all of it.
//!
//! Why a bare Pod per variant and not a Deployment/StatefulSet: the operator *is* the controller that decides
//! the node. A Pod with `spec.nodeName` is bound at once (no scheduler round trip on the failover path), and
//! moving a variant is "force-delete the stranded pod, create one on the new node" -- two API calls. A
//! per-variant Deployment would add a ReplicaSet hop, the scheduler, and leave the old pod Terminating on the
//! dead node until someone force-deletes it anyway; a StatefulSet refuses to replace a pod on an unreachable
//! node at all. Restarts of a crashed container are still done by the kubelet (restartPolicy Always).

use crate::config::{HTTP_PORT, OperatorConfig};
use crate::hash;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use thiserror::Error;
use vp_api::labels::{self, COMPONENT_AGGREGATOR, COMPONENT_VARIANT};
use vp_api::manifest::ManifestVariant;
use vp_api::{CombineRule, EnsembleManifest, VariantEnsemble, VariantSourceKind, VariantSpec};

/// Annotation holding the hash of a variant pod's template (everything but the node), to spot outdated pods.
pub const TEMPLATE_HASH: &str = "vp.dev/template-hash";
/// Annotation on a replacement pod: when the failure that caused it began (RFC 3339), for the
/// failure-to-replacement-ready latency metric.
pub const FAILED_SINCE: &str = "vp.dev/failed-since";
/// Annotation on a replacement pod: the metric label of the failure that caused it (e.g. LeaseExpired).
pub const FAILURE_REASON: &str = "vp.dev/failure-reason";
/// Key of the aggregator config in its ConfigMap.
pub const AGGREGATOR_CONFIG_KEY: &str = "aggregator.yaml";
/// Key of the manifest copy in the aggregator ConfigMap (the config refers to it by this relative name).
pub const MANIFEST_KEY: &str = "ensemble.yaml";
/// Where the variant container finds the manifest and its model file.
const VARIANT_DIR: &str = "/vp";

/// The URL source's init container script: download to a temporary name, check the sha256, and only then give
/// the file its real name, so the variant never sees a partial or unverified model. URL, digest, file name and
/// folder come from the environment (`MODEL_URL`, `MODEL_SHA256`, `FILE`, `DIR`), never spliced into the text.
pub const FETCH_SCRIPT: &str = "set -eu; curl -fsSL --retry 3 -o \"$DIR/$FILE.part\" \"$MODEL_URL\"; \
     echo \"$MODEL_SHA256  $DIR/$FILE.part\" | sha256sum -c -; mv \"$DIR/$FILE.part\" \"$DIR/$FILE\"";

/// A desired object could not be built.
#[derive(Debug, Error)]
pub enum BuildError {
    /// The ensemble has no namespace or uid (not read from the API server).
    #[error("ensemble {0} lacks metadata.namespace or metadata.uid")]
    Metadata(String),
    /// A variant's source is not exactly one kind (the API server normally rejects this).
    #[error(
        "variant {0}: source must set exactly one of configMap, url, hostPath, persistentVolumeClaim"
    )]
    Source(String),
    /// The manifest names a model file that is not a plain file name.
    #[error("variant {0}: manifest file name {1:?} must be a plain file name ([A-Za-z0-9._-])")]
    FileName(String, String),
    /// An internal object did not convert to its Kubernetes type.
    #[error("cannot build {0}: {1}")]
    Convert(&'static str, serde_json::Error),
    /// The aggregator config did not serialise.
    #[error("cannot write aggregator config: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

fn convert<T: serde::de::DeserializeOwned>(what: &'static str, v: Value) -> Result<T, BuildError> {
    serde_json::from_value(v).map_err(|e| BuildError::Convert(what, e))
}

fn owner(ens: &VariantEnsemble) -> Result<Value, BuildError> {
    let r = ens
        .controller_owner_ref(&())
        .ok_or_else(|| BuildError::Metadata(ens.name_any()))?;
    serde_json::to_value(r).map_err(|e| BuildError::Convert("owner reference", e))
}

fn namespace(ens: &VariantEnsemble) -> Result<String, BuildError> {
    ens.namespace()
        .ok_or_else(|| BuildError::Metadata(ens.name_any()))
}

/// Name of a variant's Service (stable for the ensemble's life).
pub fn variant_service_name(ensemble: &str, variant: &str) -> String {
    format!("{ensemble}-{variant}")
}

/// Name of the aggregator's Deployment, Service and ConfigMap.
pub fn aggregator_name(ensemble: &str) -> String {
    format!("{ensemble}-aggregator")
}

/// In-cluster URL of the aggregator.
pub fn aggregator_endpoint(ens: &VariantEnsemble) -> Option<String> {
    let ns = ens.namespace()?;
    Some(format!(
        "http://{}.{ns}.svc:{}",
        aggregator_name(&ens.name_any()),
        ens.spec.aggregator.service.port
    ))
}

/// Hardened pod-level security context shared by every pod the operator creates.
fn pod_security() -> Value {
    json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
           "seccompProfile": {"type": "RuntimeDefault"}})
}

fn container_security() -> Value {
    json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}})
}

fn plain_file_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// The variant pod's spec without its node, plus the hash of it. The pod name is derived from node and hash,
/// so the same variant on the same node with the same template always has the same name.
fn variant_pod_spec(
    ens: &VariantEnsemble,
    v: &VariantSpec,
    mv: &ManifestVariant,
    cfg: &OperatorConfig,
) -> Result<Value, BuildError> {
    let spec = &ens.spec;
    if !plain_file_name(&mv.file) {
        return Err(BuildError::FileName(v.name.clone(), mv.file.clone()));
    }
    let model_path = format!("{VARIANT_DIR}/{}", mv.file);
    let mut volumes = vec![
        json!({"name": "manifest", "configMap": {"name": spec.model.manifest.config_map,
        "items": [{"key": spec.model.manifest.key, "path": MANIFEST_KEY}]}}),
    ];
    let mut mounts = vec![
        json!({"name": "manifest", "mountPath": format!("{VARIANT_DIR}/{MANIFEST_KEY}"),
        "subPath": MANIFEST_KEY, "readOnly": true}),
    ];
    let mut init = Vec::new();
    match v
        .source
        .kind()
        .ok_or_else(|| BuildError::Source(v.name.clone()))?
    {
        VariantSourceKind::ConfigMap(cm) => {
            volumes.push(json!({"name": "model", "configMap": {"name": cm.name,
                "items": [{"key": cm.key, "path": mv.file}]}}));
            mounts.push(json!({"name": "model", "mountPath": model_path, "subPath": mv.file, "readOnly": true}));
        }
        VariantSourceKind::HostPath(path) => {
            volumes.push(json!({"name": "model", "hostPath": {"path": path, "type": "File"}}));
            mounts.push(json!({"name": "model", "mountPath": model_path, "readOnly": true}));
        }
        VariantSourceKind::Pvc(pvc) => {
            volumes.push(
                json!({"name": "model", "persistentVolumeClaim": {"claimName": pvc.claim_name,
                "readOnly": true}}),
            );
            mounts.push(json!({"name": "model", "mountPath": model_path, "subPath": pvc.path, "readOnly": true}));
        }
        VariantSourceKind::Url(u) => {
            volumes.push(json!({"name": "model", "emptyDir": {}}));
            mounts.push(json!({"name": "model", "mountPath": model_path, "subPath": mv.file, "readOnly": true}));
            // URL and digest travel as environment variables, never spliced into the script.
            init.push(json!({
                "name": "fetch-model",
                "image": cfg.fetch_image,
                "command": ["sh", "-c",
                    FETCH_SCRIPT],
                "env": [{"name": "MODEL_URL", "value": u.url}, {"name": "MODEL_SHA256", "value": u.sha256},
                        {"name": "FILE", "value": mv.file}, {"name": "DIR", "value": "/work"}],
                "volumeMounts": [{"name": "model", "mountPath": "/work"}],
                "securityContext": container_security(),
                "resources": cfg.variant_resources,
            }));
        }
    }
    let resources = v
        .resources
        .as_ref()
        .or(spec.resources.as_ref())
        .unwrap_or(&cfg.variant_resources);
    let probe = |path: &str, period: i32, failures: i32| {
        json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures,
               "timeoutSeconds": 1})
    };
    let mut pod_spec = json!({
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 10,
        "enableServiceLinks": false,
        "automountServiceAccountToken": false,
        "securityContext": pod_security(),
        "volumes": volumes,
        "containers": [{
            "name": "variant",
            "image": spec.images.variant.as_deref().unwrap_or(&cfg.variant_image),
            "args": ["--manifest", format!("{VARIANT_DIR}/{MANIFEST_KEY}"), "--variant", v.name,
                     "--listen", format!("0.0.0.0:{HTTP_PORT}"), "--default-k", spec.top_k.to_string(),
                     "--log-format", "json"],
            "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
            "readinessProbe": probe("/v2/health/ready", 2, 1),
            "livenessProbe": probe("/v2/health/live", 10, 3),
            "resources": resources,
            "volumeMounts": mounts,
            "securityContext": container_security(),
        }],
    });
    if let Some(policy) = &spec.images.pull_policy {
        pod_spec["containers"][0]["imagePullPolicy"] = json!(policy);
    }
    if !init.is_empty() {
        pod_spec["initContainers"] = json!(init);
    }
    if !spec.placement.tolerations.is_empty() {
        pod_spec["tolerations"] = json!(spec.placement.tolerations);
    }
    Ok(pod_spec)
}

/// Hash of a variant's pod template for this spec (changes when anything but the node would change).
pub fn variant_template_hash(
    ens: &VariantEnsemble,
    v: &VariantSpec,
    mv: &ManifestVariant,
    cfg: &OperatorConfig,
) -> Result<String, BuildError> {
    let spec = variant_pod_spec(ens, v, mv, cfg)?;
    Ok(hash::short(spec.to_string().as_bytes(), 8))
}

/// Name of the variant's pod on `node` with template hash `template`.
pub fn variant_pod_name(ensemble: &str, variant: &str, node: &str, template: &str) -> String {
    format!(
        "{ensemble}-{variant}-{}",
        hash::short(format!("{node}/{template}").as_bytes(), 5)
    )
}

/// The pod running variant `v` on `node`. `failure` marks a replacement: when the failure began and its
/// metric label (see [`FAILED_SINCE`]); `reason` says why it was placed where it is.
pub fn variant_pod(
    ens: &VariantEnsemble,
    v: &VariantSpec,
    mv: &ManifestVariant,
    node: &str,
    cfg: &OperatorConfig,
    reason: &str,
    failure: Option<(&str, &str)>,
) -> Result<Pod, BuildError> {
    let name = ens.name_any();
    let mut spec = variant_pod_spec(ens, v, mv, cfg)?;
    let template = hash::short(spec.to_string().as_bytes(), 8);
    spec["nodeName"] = json!(node);
    let mut annotations = BTreeMap::from([
        (TEMPLATE_HASH.to_string(), template.clone()),
        (labels::PLACEMENT_REASON.to_string(), reason.to_string()),
    ]);
    if let Some((since, label)) = failure {
        annotations.insert(FAILED_SINCE.into(), since.into());
        annotations.insert(FAILURE_REASON.into(), label.into());
    }
    convert(
        "variant pod",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": variant_pod_name(&name, &v.name, node, &template),
                "namespace": namespace(ens)?,
                "labels": labels::object_labels(&name, COMPONENT_VARIANT, Some(&v.name)),
                "annotations": annotations,
                "ownerReferences": [owner(ens)?],
            },
            "spec": spec,
        }),
    )
}

/// The stable Service of one variant (what the aggregator config points at).
pub fn variant_service(ens: &VariantEnsemble, variant: &str) -> Result<Service, BuildError> {
    let name = ens.name_any();
    convert(
        "variant service",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": variant_service_name(&name, variant),
                "namespace": namespace(ens)?,
                "labels": labels::object_labels(&name, COMPONENT_VARIANT, Some(variant)),
                "ownerReferences": [owner(ens)?],
            },
            "spec": {
                "type": "ClusterIP",
                "selector": labels::selector_labels(&name, COMPONENT_VARIANT, Some(variant)),
                "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
        }),
    )
}

/// The aggregator config file (format: docs/dataplane.md, schema version 1).
pub fn aggregator_config(
    ens: &VariantEnsemble,
    manifest: &EnsembleManifest,
) -> Result<String, BuildError> {
    let ns = namespace(ens)?;
    let name = ens.name_any();
    let spec = &ens.spec;
    let variants: Vec<Value> = spec
        .variants
        .iter()
        .map(|v| {
            json!({"name": v.name,
                   "url": format!("http://{}.{ns}.svc:{HTTP_PORT}", variant_service_name(&name, &v.name))})
        })
        .collect();
    let mut cfg = json!({
        "schema_version": 1,
        "manifest": MANIFEST_KEY,
        "model_name": name,
        "top_k": spec.top_k,
        "deadline_ms": spec.aggregator.deadline_ms,
        "min_variants": spec.aggregator.min_variants,
        "combine": match spec.combine { CombineRule::MajorityVote => "majority", _ => "soft_vote" },
        "variants": variants,
    });
    if spec.combine == CombineRule::WeightedSoftVote {
        let weights: BTreeMap<&str, f64> = spec
            .variants
            .iter()
            .filter_map(|v| {
                manifest
                    .variant(&v.name)
                    .map(|m| (v.name.as_str(), m.accuracy.max(1e-6)))
            })
            .collect();
        cfg["weights"] = json!(weights);
    }
    Ok(serde_yaml::to_string(&cfg)?)
}

/// The aggregator ConfigMap: its config file and a copy of the manifest text, mounted as one folder.
pub fn aggregator_configmap(
    ens: &VariantEnsemble,
    manifest: &EnsembleManifest,
    manifest_text: &str,
) -> Result<ConfigMap, BuildError> {
    let name = ens.name_any();
    convert(
        "aggregator configmap",
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": aggregator_name(&name),
                "namespace": namespace(ens)?,
                "labels": labels::object_labels(&name, COMPONENT_AGGREGATOR, None),
                "ownerReferences": [owner(ens)?],
            },
            "data": {AGGREGATOR_CONFIG_KEY: aggregator_config(ens, manifest)?, MANIFEST_KEY: manifest_text},
        }),
    )
}

/// The aggregator Deployment. It re-reads its mounted config when the ConfigMap changes, so config changes
/// need no rollout.
pub fn aggregator_deployment(
    ens: &VariantEnsemble,
    cfg: &OperatorConfig,
) -> Result<Deployment, BuildError> {
    let name = ens.name_any();
    let spec = &ens.spec;
    let mut container = json!({
        "name": "aggregator",
        "image": spec.images.aggregator.as_deref().unwrap_or(&cfg.aggregator_image),
        "args": ["--config", format!("/etc/vp/{AGGREGATOR_CONFIG_KEY}"), "--listen", format!("0.0.0.0:{HTTP_PORT}"),
                 "--log-format", "json"],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10},
        "resources": spec.aggregator.resources.as_ref().unwrap_or(&cfg.aggregator_resources),
        "volumeMounts": [{"name": "config", "mountPath": "/etc/vp", "readOnly": true}],
        "securityContext": container_security(),
    });
    if let Some(policy) = &spec.images.pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    let mut pod_spec = json!({
        "enableServiceLinks": false,
        "automountServiceAccountToken": false,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": [{"name": "config", "configMap": {"name": aggregator_name(&name)}}],
        // Replicas on different nodes where possible: one lost node must not take every aggregator with it.
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {
                "labelSelector": {"matchLabels": labels::selector_labels(&name, COMPONENT_AGGREGATOR, None)},
                "topologyKey": "kubernetes.io/hostname",
            },
        }]}},
    });
    if !spec.placement.tolerations.is_empty() {
        pod_spec["tolerations"] = json!(spec.placement.tolerations);
    }
    if !spec.placement.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(spec.placement.node_selector);
    }
    convert(
        "aggregator deployment",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": aggregator_name(&name),
                "namespace": namespace(ens)?,
                "labels": labels::object_labels(&name, COMPONENT_AGGREGATOR, None),
                "ownerReferences": [owner(ens)?],
            },
            "spec": {
                "replicas": spec.aggregator.replicas,
                "selector": {"matchLabels": labels::selector_labels(&name, COMPONENT_AGGREGATOR, None)},
                "template": {
                    "metadata": {"labels": labels::object_labels(&name, COMPONENT_AGGREGATOR, None)},
                    "spec": pod_spec,
                },
            },
        }),
    )
}

/// The aggregator Service (type and port from the spec).
pub fn aggregator_service(ens: &VariantEnsemble) -> Result<Service, BuildError> {
    let name = ens.name_any();
    let svc = &ens.spec.aggregator.service;
    convert(
        "aggregator service",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": aggregator_name(&name),
                "namespace": namespace(ens)?,
                "labels": labels::object_labels(&name, COMPONENT_AGGREGATOR, None),
                "ownerReferences": [owner(ens)?],
            },
            "spec": {
                "type": svc.type_.as_str(),
                "selector": labels::selector_labels(&name, COMPONENT_AGGREGATOR, None),
                "ports": [{"name": "http", "port": svc.port, "targetPort": "http", "protocol": "TCP"}],
            },
        }),
    )
}

#[cfg(test)]
mod tests;
