//! Step 3 of a reconcile: the decision for one ensemble, as a pure function from what was gathered and
//! validated (the ensemble, its manifest, nodes judged with its grace, its pods) to what to do (pods to create
//! and delete, objects to apply, the new status, events, metric observations). The apply step only carries
//! this out.
//!
//! The parts: [`variants`] (pods per variant: keep, replace, place), [`aggregator`] (its pods on failed
//! nodes), [`status`] (summary, conditions and their events).

pub mod aggregator;
pub mod status;
pub mod variants;

use crate::config::OperatorConfig;
use crate::desired::{self, BuildError};
use crate::placement::NodeInfo;
use crate::reconcile::validate::Valid;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use vp_api::{VariantEnsemble, VariantEnsembleStatus};

/// Everything the decision needs, already read from the cluster and validated.
pub struct Inputs<'a> {
    /// The ensemble as last read.
    pub ensemble: &'a VariantEnsemble,
    /// The manifest, or why the spec cannot be carried out.
    pub valid: Result<Valid<'a>, String>,
    /// Every node, judged with this ensemble's grace.
    pub nodes: &'a [NodeInfo],
    /// The ensemble's variant pods.
    pub pods: &'a [Pod],
    /// Variants that have a Service now (to delete those no longer in the spec).
    pub services: &'a [String],
    /// The ensemble's aggregator pods (made by its Deployment).
    pub aggregator_pods: &'a [Pod],
    /// Defaults.
    pub config: &'a OperatorConfig,
    /// The present moment.
    pub now: Timestamp,
}

/// A pod to delete.
#[derive(Clone, Debug, PartialEq)]
pub struct Deletion {
    /// Pod name.
    pub name: String,
    /// Delete with grace period 0 (its node is gone or it is dead already).
    pub force: bool,
    /// Why, for logs.
    pub why: String,
}

/// An Event to record on the ensemble.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// Warning (else Normal).
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What the operator did.
    pub action: &'static str,
    /// For people.
    pub message: String,
}

/// A variant moved or replaced because of a failure.
#[derive(Clone, Debug, PartialEq)]
pub struct Reschedule {
    /// Variant name.
    pub variant: String,
    /// Metric label: LeaseExpired, NodeNotReady, NodeGone, PodFailed, CrashLoop.
    pub reason: &'static str,
    /// Node it left.
    pub from: Option<String>,
    /// Node it goes to (None: nowhere fits).
    pub to: Option<String>,
}

/// A replacement pod that became ready: the failover latency metric's observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovery {
    /// Variant name.
    pub variant: String,
    /// Metric label of the failure it replaced.
    pub reason: String,
    /// Time from the failure to the replacement's readiness.
    pub after: Duration,
}

/// The aggregator's objects.
#[derive(Clone, Debug)]
pub struct AggregatorObjects {
    /// Config file and manifest copy.
    pub configmap: ConfigMap,
    /// The Deployment.
    pub deployment: Deployment,
    /// Its Service.
    pub service: Service,
    /// The ensemble's NetworkPolicies (empty when the operator makes none).
    pub network_policies: Vec<NetworkPolicy>,
    /// The aggregator's PodDisruptionBudget (with more than one replica).
    pub disruption_budget: Option<PodDisruptionBudget>,
}

/// What to do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Pods to create.
    pub create: Vec<Pod>,
    /// Pods to delete.
    pub delete: Vec<Deletion>,
    /// Variant Services to apply.
    pub services: Vec<Service>,
    /// Variant Services to delete (variants removed from the spec).
    pub delete_services: Vec<String>,
    /// Aggregator objects to apply (None when the spec or manifest is invalid).
    pub aggregator: Option<AggregatorObjects>,
    /// The new status.
    pub status: VariantEnsembleStatus,
    /// Events to record.
    pub events: Vec<Note>,
    /// Failures acted on.
    pub reschedules: Vec<Reschedule>,
    /// Replacement pods that became ready.
    pub recovered: Vec<Recovery>,
    /// Why an aggregator pod on a failed node was left where it is (for the status).
    pub aggregator_held: Option<String>,
}

/// Decides. Never fails: problems end up in the status and events.
pub fn plan(input: &Inputs<'_>) -> Plan {
    let ens = input.ensemble;
    let old = ens.status.clone().unwrap_or_default();
    let built = input
        .valid
        .clone()
        .and_then(|valid| shared_objects(input, valid).map_err(|e| e.to_string()));
    let (valid, services, aggregator) = match built {
        Ok(b) => b,
        Err(why) => return status::invalid(input, &old, why),
    };
    let spec_names: BTreeSet<&str> = ens.spec.variants.iter().map(|v| v.name.as_str()).collect();
    let mut out = Plan {
        services,
        aggregator: Some(aggregator),
        delete_services: input
            .services
            .iter()
            .filter(|s| !spec_names.contains(s.as_str()))
            .cloned()
            .collect(),
        ..Plan::default()
    };
    let nodes: BTreeMap<&str, &NodeInfo> =
        input.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let aggregators_serving = aggregator::judge(input, &nodes, &mut out);
    let variants = variants::plan(input, valid.manifest, &nodes, &old, &mut out);
    status::summarise(
        input,
        valid.manifest,
        &old,
        &variants,
        aggregators_serving,
        &mut out,
    );
    out
}

/// Objects that depend only on the spec and manifest: the variant Services and the aggregator's objects.
fn shared_objects<'a>(
    input: &Inputs<'a>,
    valid: Valid<'a>,
) -> Result<(Valid<'a>, Vec<Service>, AggregatorObjects), BuildError> {
    let ens = input.ensemble;
    let services = ens
        .spec
        .variants
        .iter()
        .map(|v| desired::variant_service(ens, &v.name))
        .collect::<Result<_, _>>()?;
    let deployment = desired::aggregator_deployment(ens, input.config)?;
    let aggregator = AggregatorObjects {
        configmap: desired::aggregator_configmap(ens, valid.manifest, valid.manifest_text)?,
        network_policies: desired::ensemble_network_policies(
            ens,
            valid.manifest,
            input.config,
            &deployment,
        )?,
        disruption_budget: desired::aggregator_disruption_budget(ens)?,
        deployment,
        service: desired::aggregator_service(ens)?,
    };
    Ok((valid, services, aggregator))
}

#[cfg(test)]
mod tests;
