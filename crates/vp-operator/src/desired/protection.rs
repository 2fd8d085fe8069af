//! Objects that protect an ensemble rather than run it: NetworkPolicies (a variant answers only its own
//! aggregator and the monitoring namespace, so nobody bypasses the aggregator's admission control or reads a
//! single variant's replies; the aggregator answers anyone on its ports) and a PodDisruptionBudget that keeps
//! one aggregator serving through node drains when there are several. Both are optional: NetworkPolicies by the
//! operator's configuration, the budget only with more than one aggregator replica.

use super::{BuildError, aggregator_name, object_meta};
use crate::config::OperatorConfig;
use k8s_openapi::api::core::v1::ContainerPort;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use std::collections::BTreeMap;
use vp_api::VariantEnsemble;
use vp_api::labels::{self, COMPONENT_AGGREGATOR, COMPONENT_VARIANT};

/// Label every namespace carries with its own name (set by the API server since Kubernetes 1.21).
const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// Name of the NetworkPolicy that guards the ensemble's variant pods.
pub fn variants_policy_name(ensemble: &str) -> String {
    format!("{ensemble}-variants")
}

fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

/// The container's ports as NetworkPolicy ports (by number, as named ports need the CNI's support).
fn policy_ports(ports: &[ContainerPort]) -> Vec<NetworkPolicyPort> {
    ports
        .iter()
        .map(|p| NetworkPolicyPort {
            port: Some(IntOrString::Int(p.container_port)),
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            ..NetworkPolicyPort::default()
        })
        .collect()
}

/// The ensemble's NetworkPolicies, empty when the operator is configured not to create them. `variant_ports`
/// and `aggregator_ports` are the containers' ports (taken from the built pod templates, so a new port is
/// covered without touching this file).
pub fn network_policies(
    ens: &VariantEnsemble,
    cfg: &OperatorConfig,
    variant_ports: &[ContainerPort],
    aggregator_ports: &[ContainerPort],
) -> Result<Vec<NetworkPolicy>, BuildError> {
    if !cfg.network_policies {
        return Ok(Vec::new());
    }
    let name = ens.name_any();
    let mut variant_peers = vec![NetworkPolicyPeer {
        pod_selector: Some(selector(labels::selector_labels(
            &name,
            COMPONENT_AGGREGATOR,
            None,
        ))),
        ..NetworkPolicyPeer::default()
    }];
    if let Some(ns) = &cfg.monitoring_namespace {
        variant_peers.push(NetworkPolicyPeer {
            namespace_selector: Some(selector(BTreeMap::from([(
                NAMESPACE_NAME.to_string(),
                ns.clone(),
            )]))),
            ..NetworkPolicyPeer::default()
        });
    }
    let policy = |policy_name: String,
                  component: &str,
                  from: Option<Vec<NetworkPolicyPeer>>,
                  ports: &[ContainerPort]| {
        Ok::<_, BuildError>(NetworkPolicy {
            metadata: object_meta(ens, policy_name, component, None)?,
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(selector(labels::selector_labels(&name, component, None))),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from,
                    ports: Some(policy_ports(ports)),
                }]),
                ..NetworkPolicySpec::default()
            }),
        })
    };
    Ok(vec![
        policy(
            variants_policy_name(&name),
            COMPONENT_VARIANT,
            Some(variant_peers),
            variant_ports,
        )?,
        // No `from`: anyone may call the aggregator, but only on its own ports.
        policy(
            aggregator_name(&name),
            COMPONENT_AGGREGATOR,
            None,
            aggregator_ports,
        )?,
    ])
}

/// A budget that keeps at least one aggregator pod through voluntary disruptions (drains), or `None` with one
/// replica or none (a budget of one pod for one replica would block every drain of its node).
pub fn aggregator_disruption_budget(
    ens: &VariantEnsemble,
) -> Result<Option<PodDisruptionBudget>, BuildError> {
    if ens.spec.aggregator.replicas <= 1 {
        return Ok(None);
    }
    let name = ens.name_any();
    Ok(Some(PodDisruptionBudget {
        metadata: object_meta(ens, aggregator_name(&name), COMPONENT_AGGREGATOR, None)?,
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(selector(labels::selector_labels(
                &name,
                COMPONENT_AGGREGATOR,
                None,
            ))),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }))
}
