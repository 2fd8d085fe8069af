//! The cluster objects an ensemble should have, built without any I/O as typed k8s-openapi objects: one Pod per
//! variant pinned to its node and a stable Service per variant ([`variant`]), and the aggregator's ConfigMap
//! (its config file plus a copy of the manifest), Deployment and Service ([`aggregator`]). Every object gets
//! its metadata from [`object_meta`]: the standard labels and a controller owner reference to the ensemble, so
//! deleting the ensemble garbage-collects all of it.
//!
//! Why a bare Pod per variant and not a Deployment/StatefulSet: the operator *is* the controller that decides
//! the node. A Pod with `spec.nodeName` is bound at once (no scheduler round trip on the failover path), and
//! moving a variant is "force-delete the stranded pod, create one on the new node" -- two API calls. A
//! per-variant Deployment would add a ReplicaSet hop, the scheduler, and leave the old pod Terminating on the
//! dead node until someone force-deletes it anyway; a StatefulSet refuses to replace a pod on an unreachable
//! node at all. Restarts of a crashed container are still done by the kubelet (restartPolicy Always).

pub mod aggregator;
pub mod protection;
pub mod variant;

pub use aggregator::{
    AGGREGATOR_CONFIG_KEY, aggregator_config, aggregator_configmap, aggregator_deployment,
    aggregator_service,
};
pub use protection::{aggregator_disruption_budget, network_policies, variants_policy_name};
pub use variant::{
    FAILED_SINCE, FAILURE_REASON, FETCH_SCRIPT, Replacement, TEMPLATE_HASH, VariantTemplate,
    variant_pod, variant_pod_name, variant_service, variant_template,
};

use crate::config::{GRPC_PORT, HTTP_PORT, MEMORY_BUDGET_PERCENT, OperatorConfig};
use crate::quantity;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HTTPGetAction, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, ServicePort,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use thiserror::Error;
use vp_api::labels;
use vp_api::{EnsembleManifest, VariantEnsemble};

/// Key of the manifest copy in the aggregator ConfigMap (the config refers to it by this relative name).
pub const MANIFEST_KEY: &str = "ensemble.yaml";
/// Name of the HTTP port of every container and Service the operator creates.
const PORT_NAME: &str = "http";
/// Name of the OIP gRPC port (container and Service).
const GRPC_PORT_NAME: &str = "grpc";

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
    /// A spec value does not fit the aggregator config (the CRD's ranges normally prevent this).
    #[error("aggregator config: {0}")]
    Range(String),
    /// The aggregator config did not serialise.
    #[error("cannot write aggregator config: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A pod template did not serialise for its hash.
    #[error("cannot hash the pod template of variant {0}: {1}")]
    Hash(String, serde_json::Error),
}

/// Metadata of an object named `name` that belongs to the ensemble: its namespace, the standard labels for
/// `component` (and `variant` for per-variant objects), and a controller owner reference.
pub fn object_meta(
    ens: &VariantEnsemble,
    name: String,
    component: &str,
    variant: Option<&str>,
) -> Result<ObjectMeta, BuildError> {
    let missing = || BuildError::Metadata(ens.name_any());
    let owner = ens.controller_owner_ref(&()).ok_or_else(missing)?;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(ens.namespace().ok_or_else(missing)?),
        labels: Some(labels::object_labels(&ens.name_any(), component, variant)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
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

/// The `--memory-budget-mib` of a server whose container has these resources: [`MEMORY_BUDGET_PERCENT`] of
/// its memory limit, in whole MiB. `None` without a (readable) limit: the server keeps its own default.
pub fn memory_budget_mib(resources: &ResourceRequirements) -> Option<u64> {
    let limit = resources.limits.as_ref()?.get("memory")?;
    let bytes = quantity::parse(&limit.0).ok()?;
    // f64 -> u64 saturates; a limit beyond u64 bytes is not a real pod.
    let mib = (bytes / (1024.0 * 1024.0)) as u64;
    Some(mib.saturating_mul(MEMORY_BUDGET_PERCENT) / 100)
}

/// `args` followed by `--memory-budget-mib` for these resources when they set a memory limit.
fn with_memory_budget(args: &[&str], resources: &ResourceRequirements) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if let Some(mib) = memory_budget_mib(resources) {
        out.extend(["--memory-budget-mib".to_string(), mib.to_string()]);
    }
    out
}

/// The ensemble's NetworkPolicies, for the ports of its built aggregator Deployment and of its variants'
/// containers (the first variant's template: every variant runs the same server).
pub fn ensemble_network_policies(
    ens: &VariantEnsemble,
    manifest: &EnsembleManifest,
    cfg: &OperatorConfig,
    aggregator: &Deployment,
) -> Result<Vec<NetworkPolicy>, BuildError> {
    let ports = |spec: Option<&PodSpec>| -> Vec<ContainerPort> {
        spec.and_then(|s| s.containers.first())
            .and_then(|c| c.ports.clone())
            .unwrap_or_default()
    };
    let variant_ports = match ens
        .spec
        .variants
        .iter()
        .find_map(|v| manifest.variant(&v.name).map(|mv| (v, mv)))
    {
        Some((v, mv)) => ports(Some(&variant_template(ens, v, mv, cfg)?.spec)),
        None => http_container_port(),
    };
    let aggregator_ports = ports(aggregator.spec.template.spec.as_ref());
    network_policies(ens, cfg, &variant_ports, &aggregator_ports)
}

/// Hardened pod-level security context shared by every pod the operator creates.
fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        fs_group: Some(65532),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Hardened container security context shared by every container the operator creates.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// A data-plane server container: `image`, its own `args` followed by the listen addresses (HTTP and OIP gRPC)
/// and JSON logs, the HTTP and gRPC ports, hardened; probes, resources and mounts are the caller's.
fn server_container(
    name: &str,
    image: String,
    pull_policy: Option<String>,
    args: Vec<String>,
) -> Container {
    let common = [
        "--listen",
        &format!("0.0.0.0:{HTTP_PORT}"),
        "--grpc-listen",
        &format!("0.0.0.0:{GRPC_PORT}"),
        "--log-format",
        "json",
    ]
    .map(str::to_string);
    Container {
        name: name.into(),
        image: Some(image),
        image_pull_policy: pull_policy,
        args: Some(args.into_iter().chain(common).collect()),
        ports: Some(http_container_port()),
        security_context: Some(container_security()),
        ..Container::default()
    }
}

/// The container ports every server listens on: HTTP and OIP gRPC.
fn http_container_port() -> Vec<ContainerPort> {
    [(PORT_NAME, HTTP_PORT), (GRPC_PORT_NAME, GRPC_PORT)]
        .map(|(name, port)| ContainerPort {
            name: Some(name.into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        })
        .to_vec()
}

/// The Service ports: `port` forwarding to the container's named HTTP port, and the gRPC port (`appProtocol`
/// `kubernetes.io/h2c`: gRPC without TLS) on [`GRPC_PORT`], or on the next port when `port` is that one.
fn http_service_port(port: i32) -> Vec<ServicePort> {
    let grpc = if port == GRPC_PORT {
        GRPC_PORT + 1
    } else {
        GRPC_PORT
    };
    vec![
        ServicePort {
            name: Some(PORT_NAME.into()),
            port,
            target_port: Some(IntOrString::String(PORT_NAME.into())),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        },
        ServicePort {
            name: Some(GRPC_PORT_NAME.into()),
            port: grpc,
            target_port: Some(IntOrString::String(GRPC_PORT_NAME.into())),
            protocol: Some("TCP".into()),
            app_protocol: Some("kubernetes.io/h2c".into()),
            ..ServicePort::default()
        },
    ]
}

/// An HTTP GET probe of `path` on the named port; `None` fields keep Kubernetes' defaults.
fn http_probe(
    path: &str,
    period: i32,
    failures: Option<i32>,
    timeout: Option<i32>,
) -> Option<Probe> {
    Some(Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: failures,
        timeout_seconds: timeout,
        ..Probe::default()
    })
}

/// `Some(items)` unless empty (keeps empty lists out of the applied object, as the JSON form did).
fn non_empty<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

/// `Some(map)` unless empty.
fn non_empty_map(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.clone())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn servers_expose_http_and_grpc() {
        let c = server_container("v", "img".into(), None, Vec::new());
        let args = c.args.expect("args");
        assert!(
            args.windows(2)
                .any(|w| w == ["--grpc-listen", "0.0.0.0:8081"])
        );
        let ports: Vec<_> = c
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.container_port))
            .collect();
        assert_eq!(ports, [("http".into(), 8080), ("grpc".into(), 8081)]);
        let svc = http_service_port(9000);
        assert_eq!((svc[0].name.as_deref(), svc[0].port), (Some("http"), 9000));
        assert_eq!(
            (
                svc[1].name.as_deref(),
                svc[1].port,
                svc[1].app_protocol.as_deref()
            ),
            (Some("grpc"), 8081, Some("kubernetes.io/h2c"))
        );
        // A spec that puts HTTP on 8081 moves gRPC to the next port (Service ports must differ).
        assert_eq!(http_service_port(8081)[1].port, 8082);
    }
}
