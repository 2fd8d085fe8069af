//! The reconcile decision for one ensemble, as a pure function: from what was observed (the ensemble, its
//! manifest, nodes judged with its grace, its pods) to what to do (pods to create and delete, objects to apply,
//! the new status, events, metric observations). The controller only carries this out.
//!
//! Per variant: pods on failed or deleted nodes are force-deleted at once (nothing piles up in Terminating);
//! pods that ended (evicted, failed) or crash-loop are replaced, elsewhere if possible; one serving pod is kept
//! where it is; outdated or duplicate pods are removed only once the desired pod serves, so spec changes do
//! not take a variant down. Then placement finds nodes for variants without a pod, and the status says what
//! serves, what does not and why.

use crate::conditions::{condition, is_true};
use crate::config::OperatorConfig;
use crate::desired::{self, BuildError, FAILED_SINCE, FAILURE_REASON, TEMPLATE_HASH};
use crate::health::{FailureReason, Health};
use crate::observe::{self, PodFailure};
use crate::placement::{self, Constraints, Demand, NodeInfo};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use vp_api::labels::VARIANT;
use vp_api::{
    ConditionType, EnsembleManifest, VariantEnsemble, VariantEnsembleStatus, VariantSourceKind,
    VariantStatus,
};

/// Everything the decision needs, already read from the cluster.
pub struct Inputs<'a> {
    /// The ensemble as last read.
    pub ensemble: &'a VariantEnsemble,
    /// The manifest and its text, or why it could not be read.
    pub manifest: Result<(&'a EnsembleManifest, &'a str), String>,
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

/// The aggregator's objects.
#[derive(Clone, Debug)]
pub struct Aggregator {
    /// Config file and manifest copy.
    pub configmap: ConfigMap,
    /// The Deployment.
    pub deployment: Deployment,
    /// Its Service.
    pub service: Service,
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
    pub aggregator: Option<Aggregator>,
    /// The new status.
    pub status: VariantEnsembleStatus,
    /// Events to record.
    pub events: Vec<Note>,
    /// Failures acted on.
    pub reschedules: Vec<Reschedule>,
    /// Replacement pods that became ready: variant, failure reason label, time from failure to ready.
    pub recovered: Vec<(String, String, Duration)>,
}

/// Checks the spec against the manifest: classes, variant names, URL digests, k.
fn validate(ens: &VariantEnsemble, m: &EnsembleManifest) -> Result<(), String> {
    let spec = &ens.spec;
    let classes = i64::try_from(m.output.classes).unwrap_or(i64::MAX);
    if i64::from(spec.model.classes) != classes {
        return Err(format!(
            "spec.model.classes is {} but the manifest's output.classes is {}",
            spec.model.classes, m.output.classes
        ));
    }
    if spec.top_k < 1 || i64::from(spec.top_k) > classes / 2 {
        return Err(format!(
            "topK {} is outside 1..={}",
            spec.top_k,
            m.output.classes / 2
        ));
    }
    let mut seen = BTreeSet::new();
    for v in &spec.variants {
        if !seen.insert(&v.name) {
            return Err(format!("variant {} appears twice", v.name));
        }
        let mv = m.variant(&v.name).ok_or_else(|| {
            let known: Vec<&str> = m.variants.iter().map(|v| v.name.as_str()).collect();
            format!(
                "variant {} is not in manifest family {} (it has {})",
                v.name,
                m.family,
                known.join(", ")
            )
        })?;
        match v.source.kind() {
            None => {
                return Err(format!(
                    "variant {}: source must set exactly one kind",
                    v.name
                ));
            }
            Some(VariantSourceKind::Url(u)) if !u.sha256.eq_ignore_ascii_case(&mv.sha256) => {
                return Err(format!(
                    "variant {}: url sha256 {} differs from the manifest's {}",
                    v.name, u.sha256, mv.sha256
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// What to do with one existing pod.
enum Verdict {
    /// Healthy enough to keep.
    Keep,
    /// Already terminating on a healthy node: leave it alone.
    Terminating,
    /// Must go; maybe counts as a reschedule.
    Replace {
        reason: &'static str,
        why: String,
        force: bool,
        avoid: bool,
        failed_since: Timestamp,
        counts: bool,
    },
}

fn judge_pod(pod: &Pod, nodes: &BTreeMap<&str, &NodeInfo>, now: Timestamp) -> Verdict {
    let node = observe::pod_node(pod).and_then(|n| nodes.get(n));
    let node_failure = match node {
        None => Some(FailureReason::Gone),
        Some(n) => match &n.health {
            Health::Failed(r) => Some(r.clone()),
            Health::Healthy => None,
        },
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    if let Some(r) = node_failure {
        let since = match r {
            FailureReason::LeaseExpired { silent_s } => now
                .checked_sub(jiff::SignedDuration::from_secs(
                    i64::try_from(silent_s).unwrap_or(0),
                ))
                .unwrap_or(now),
            _ => now,
        };
        let on = observe::pod_node(pod).unwrap_or("?");
        return Verdict::Replace {
            reason: r.label(),
            why: format!("{on}: {r}"),
            force: true,
            avoid: false,
            failed_since: since,
            counts: !deleting,
        };
    }
    if deleting {
        return Verdict::Terminating;
    }
    match observe::pod_failure(pod) {
        Some(PodFailure::Ended(why)) => Verdict::Replace {
            reason: "PodFailed",
            why,
            force: true,
            avoid: true,
            failed_since: now,
            counts: true,
        },
        Some(PodFailure::CrashLoop(why)) => Verdict::Replace {
            reason: "CrashLoop",
            why,
            force: false,
            avoid: true,
            failed_since: now,
            counts: true,
        },
        None => Verdict::Keep,
    }
}

/// Aggregator pods on failed or vanished nodes are force-deleted, so that their ReplicaSet starts replacements on
/// live nodes now instead of after Kubernetes' 300 s `unreachable` toleration. Returns how many serve: Ready,
/// not terminating, on a healthy node (a pod on a silent node may still look Ready to the API server).
fn judge_aggregators(pods: &[Pod], nodes: &BTreeMap<&str, &NodeInfo>, out: &mut Plan) -> usize {
    let mut serving = 0;
    for pod in pods {
        let Some(on) = observe::pod_node(pod) else {
            continue;
        };
        let failure = match nodes.get(on).map(|n| &n.health) {
            Some(Health::Healthy) => None,
            Some(Health::Failed(r)) => Some(r.clone()),
            None => Some(FailureReason::Gone),
        };
        let Some(r) = failure else {
            if pod.metadata.deletion_timestamp.is_none() && observe::pod_ready(pod) {
                serving += 1;
            }
            continue;
        };
        let why = format!("{on}: {r}");
        if pod.metadata.deletion_timestamp.is_none() {
            out.events.push(Note {
                warning: true,
                reason: "AggregatorPodReplaced",
                action: "Delete",
                message: format!(
                    "aggregator pod {} deleted ({why}); its Deployment starts a replacement on a live node",
                    pod.name_any()
                ),
            });
        }
        out.delete.push(Deletion {
            name: pod.name_any(),
            force: true,
            why,
        });
    }
    serving
}

fn template(pod: &Pod) -> Option<&str> {
    pod.annotations().get(TEMPLATE_HASH).map(String::as_str)
}

/// Decides. Never fails: problems end up in the status and events.
pub fn plan(input: &Inputs<'_>) -> Plan {
    let ens = input.ensemble;
    let old = ens.status.clone().unwrap_or_default();
    let generation = ens.metadata.generation;
    let mut out = Plan::default();
    let spec_names: BTreeSet<&str> = ens.spec.variants.iter().map(|v| v.name.as_str()).collect();

    let checked = input
        .manifest
        .clone()
        .and_then(|(m, text)| validate(ens, m).map(|()| (m, text)))
        .and_then(|(m, text)| {
            build_shared(input, m, text)
                .map(|s| (m, s))
                .map_err(|e| e.to_string())
        });
    let (manifest, shared) = match checked {
        Ok((m, shared)) => (m, shared),
        Err(why) => return invalid(input, &old, why),
    };
    out.services = shared.services;
    out.aggregator = Some(shared.aggregator);
    out.delete_services = input
        .services
        .iter()
        .filter(|s| !spec_names.contains(s.as_str()))
        .cloned()
        .collect();

    let nodes: BTreeMap<&str, &NodeInfo> =
        input.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let aggregator_ready = judge_aggregators(input.aggregator_pods, &nodes, &mut out);
    let mut by_variant: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in input.pods {
        match pod
            .labels()
            .get(VARIANT)
            .map(String::as_str)
            .filter(|v| spec_names.contains(v))
        {
            Some(v) => by_variant.entry(v).or_default().push(pod),
            None if pod.metadata.deletion_timestamp.is_none() => out.delete.push(Deletion {
                name: pod.name_any(),
                force: false,
                why: "variant removed from the spec".into(),
            }),
            None => {}
        }
    }

    // Per variant: judge pods, keep one, collect demands for placement.
    struct Work<'p> {
        keep: Vec<&'p Pod>,
        failed: Option<(&'static str, String, Option<String>, Timestamp)>,
        template: String,
    }
    let mut work: BTreeMap<&str, Work<'_>> = BTreeMap::new();
    let mut demands = Vec::new();
    for v in &ens.spec.variants {
        let Some(mv) = manifest.variant(&v.name) else {
            continue;
        };
        let Ok(tmpl) = desired::variant_template_hash(ens, v, mv, input.config) else {
            continue;
        };
        let mut w = Work {
            keep: vec![],
            failed: None,
            template: tmpl,
        };
        let mut avoid = vec![];
        for pod in by_variant.get(v.name.as_str()).into_iter().flatten() {
            match judge_pod(pod, &nodes, input.now) {
                Verdict::Keep => w.keep.push(pod),
                Verdict::Terminating => {}
                Verdict::Replace {
                    reason,
                    why,
                    force,
                    avoid: a,
                    failed_since,
                    counts,
                } => {
                    let from = observe::pod_node(pod).map(str::to_string);
                    if a {
                        avoid.extend(from.clone());
                    }
                    out.delete.push(Deletion {
                        name: pod.name_any(),
                        force,
                        why: why.clone(),
                    });
                    if counts && w.failed.is_none() {
                        w.failed = Some((reason, why, from, failed_since));
                    }
                }
            }
        }
        // Keep the pod that best matches: current template, then ready, then name.
        w.keep.sort_by_key(|p| {
            (
                template(p) != Some(w.template.as_str()),
                !observe::pod_ready(p),
                p.name_any(),
            )
        });
        let (cpu, memory) = observe::requests(
            v.resources
                .as_ref()
                .or(ens.spec.resources.as_ref())
                .or(Some(&input.config.variant_resources)),
        );
        demands.push(Demand {
            name: v.name.clone(),
            weight: mv.macs,
            cpu,
            memory,
            current: w
                .keep
                .first()
                .and_then(|p| observe::pod_node(p))
                .map(str::to_string),
            avoid,
        });
        work.insert(v.name.as_str(), w);
    }

    // Capacity used by this ensemble's own kept pods is accounted by placement itself.
    let constraints = Constraints {
        strategy: ens.spec.placement.strategy,
        node_selector: ens.spec.placement.node_selector.clone(),
        affinity: ens.spec.placement.affinity.clone(),
        tolerations: ens.spec.placement.tolerations.clone(),
    };
    let placed = placement::place(&demands, input.nodes, &constraints);

    let old_variants: BTreeMap<&str, &VariantStatus> =
        old.variants.iter().map(|v| (v.name.as_str(), v)).collect();
    let mut ready_names = Vec::new();
    let mut starting = 0;
    for v in &ens.spec.variants {
        let (Some(w), Some(mv)) = (work.get(v.name.as_str()), manifest.variant(&v.name)) else {
            continue;
        };
        let prev = old_variants.get(v.name.as_str());
        let assigned = placed.assigned.get(&v.name);
        let mut message = None;
        let mut desired_name = None;
        if let Some(node) = assigned {
            let name = desired::variant_pod_name(&ens.name_any(), &v.name, node, &w.template);
            let exists = w.keep.iter().any(|p| p.name_any() == name);
            let desired_ready = w
                .keep
                .iter()
                .any(|p| p.name_any() == name && observe::pod_ready(p));
            if !exists {
                let reason = match &w.failed {
                    Some((_, why, _, _)) => format!("replacing pod lost to: {why}"),
                    None if w.keep.is_empty() => "initial placement".to_string(),
                    None => "spec changed or node no longer eligible".to_string(),
                };
                let since = w.failed.as_ref().map(|f| (f.3.to_string(), f.0));
                let failure = since.as_ref().map(|(t, label)| (t.as_str(), *label));
                match desired::variant_pod(ens, v, mv, node, input.config, &reason, failure) {
                    Ok(pod) => out.create.push(pod),
                    Err(e) => message = Some(e.to_string()),
                }
            }
            // Other pods go once the desired one serves; unready ones go at once.
            for p in w.keep.iter().filter(|p| p.name_any() != name) {
                if desired_ready || !observe::pod_ready(p) {
                    out.delete.push(Deletion {
                        name: p.name_any(),
                        force: false,
                        why: "replaced by an up-to-date pod".into(),
                    });
                }
            }
            desired_name = Some(name);
        }
        if let Some((reason, why, from, _)) = &w.failed {
            out.reschedules.push(Reschedule {
                variant: v.name.clone(),
                reason,
                from: from.clone(),
                to: assigned.cloned(),
            });
            let note = match assigned {
                Some(to) => format!(
                    "variant {} moved from {} to {to}: {why}",
                    v.name,
                    from.as_deref().unwrap_or("?")
                ),
                None => format!(
                    "variant {} lost its pod ({why}) and cannot be placed",
                    v.name
                ),
            };
            out.events.push(Note {
                warning: true,
                reason: "Rescheduled",
                action: "Reschedule",
                message: note,
            });
        }
        if let Some(why) = placed.unplaced.get(&v.name) {
            message = Some(why.clone());
            if prev.and_then(|p| p.message.as_deref()) != Some(why.as_str()) {
                out.events.push(Note {
                    warning: true,
                    reason: "FailedPlacement",
                    action: "Place",
                    message: format!("variant {}: {why}", v.name),
                });
            }
        }
        let deleting: BTreeSet<String> = out.delete.iter().map(|d| d.name.clone()).collect();
        let serving = w
            .keep
            .iter()
            .filter(|p| observe::pod_ready(p) && !deleting.contains(&p.name_any()))
            .min_by_key(|p| (Some(p.name_any()) != desired_name, p.name_any()))
            .copied();
        let ready = serving.is_some();
        if ready {
            ready_names.push(v.name.as_str());
        } else if assigned.is_some() {
            starting += 1;
            message = message.or_else(|| {
                Some(format!(
                    "pod starting on {}",
                    assigned.map_or("?", |n| n.as_str())
                ))
            });
        }
        if let (Some(p), Some(prev)) = (serving, prev)
            && !prev.ready
            && let Some(since) = p
                .annotations()
                .get(FAILED_SINCE)
                .and_then(|s| s.parse::<Timestamp>().ok())
        {
            let at = observe::pod_ready_since(p).unwrap_or(input.now);
            if let Ok(d) = Duration::try_from(at.duration_since(since)) {
                let reason = p
                    .annotations()
                    .get(FAILURE_REASON)
                    .cloned()
                    .unwrap_or_else(|| "Unknown".into());
                out.recovered.push((v.name.clone(), reason, d));
            }
        }
        if let Some((_, why, _, _)) = w.failed.as_ref().filter(|_| ready) {
            message = Some(format!("moved after: {why}"));
        }
        let since = match prev {
            Some(p) if p.ready == ready => p.since.clone(),
            _ => Some(Time(input.now)),
        };
        out.status.variants.push(VariantStatus {
            name: v.name.clone(),
            node: assigned.cloned(),
            pod: serving.map(|p| p.name_any()).or(desired_name),
            ready,
            since,
            reschedules: prev.map_or(0, |p| p.reschedules) + i32::from(w.failed.is_some()),
            message,
        });
    }

    // Status summary and conditions.
    let desired_n = ens.spec.variants.len();
    let available = ready_names.len();
    let k = usize::try_from(ens.spec.top_k).unwrap_or(0);
    let st = &mut out.status;
    st.observed_generation = generation;
    st.desired_variants = i32::try_from(desired_n).unwrap_or(i32::MAX);
    st.available_variants = i32::try_from(available).unwrap_or(i32::MAX);
    st.expected_accuracy = manifest.subset_accuracy(ready_names.iter().copied(), k);
    st.aggregator_endpoint = desired::aggregator_endpoint(ens);
    let agg_ok = ens.spec.aggregator.replicas == 0 || aggregator_ready > 0;
    let missing: Vec<String> = st
        .variants
        .iter()
        .filter(|v| !v.ready)
        .map(|v| {
            format!(
                "{} ({})",
                v.name,
                v.message.as_deref().unwrap_or("not ready")
            )
        })
        .collect();
    let all = available == desired_n;
    let (ready_reason, ready_msg) = match (all, agg_ok) {
        (true, true) => (
            "AllVariantsServing",
            format!("{available}/{desired_n} variants serving"),
        ),
        (true, false) => (
            "AggregatorUnavailable",
            "no aggregator replica is ready".to_string(),
        ),
        (false, _) => (
            "VariantsUnavailable",
            format!(
                "{available}/{desired_n} variants serving; not serving: {}",
                missing.join("; ")
            ),
        ),
    };
    let degraded = !all || !agg_ok;
    let (deg_reason, deg_msg) = if available == 0 {
        ("NoVariantServing", ready_msg.clone())
    } else if i64::try_from(available).unwrap_or(0) < i64::from(ens.spec.aggregator.min_variants) {
        (
            "BelowMinVariants",
            format!(
                "{ready_msg}; fewer than minVariants {}",
                ens.spec.aggregator.min_variants
            ),
        )
    } else if degraded {
        (ready_reason, ready_msg.clone())
    } else {
        ("AllVariantsServing", ready_msg.clone())
    };
    let busy = !out.create.is_empty() || !out.delete.is_empty() || starting > 0 || !agg_ok;
    let (prog_reason, prog_msg) = if !out.reschedules.is_empty() {
        (
            "Rescheduling",
            format!(
                "moving {} variant(s) off failed nodes or pods",
                out.reschedules.len()
            ),
        )
    } else if busy {
        (
            "Reconciling",
            format!(
                "{} pod(s) to create, {} to delete, {starting} starting",
                out.create.len(),
                out.delete.len()
            ),
        )
    } else {
        ("Stable", "every object is up to date".to_string())
    };
    let now = input.now;
    st.conditions = vec![
        condition(
            &old.conditions,
            ConditionType::Ready,
            all && agg_ok,
            ready_reason,
            ready_msg,
            generation,
            now,
        ),
        condition(
            &old.conditions,
            ConditionType::Degraded,
            degraded,
            deg_reason,
            deg_msg.clone(),
            generation,
            now,
        ),
        condition(
            &old.conditions,
            ConditionType::Progressing,
            busy,
            prog_reason,
            prog_msg,
            generation,
            now,
        ),
    ];
    let was_degraded = is_true(&old.conditions, ConditionType::Degraded);
    if degraded && !was_degraded && old.observed_generation.is_some() {
        out.events.push(Note {
            warning: true,
            reason: "Degraded",
            action: "Observe",
            message: deg_msg,
        });
    } else if !degraded && was_degraded {
        out.events.push(Note {
            warning: false,
            reason: "Recovered",
            action: "Observe",
            message: format!("{available}/{desired_n} variants serving again"),
        });
    }
    out
}

/// Objects that depend only on the spec and manifest.
struct Shared {
    services: Vec<Service>,
    aggregator: Aggregator,
}

fn build_shared(
    input: &Inputs<'_>,
    m: &EnsembleManifest,
    text: &str,
) -> Result<Shared, BuildError> {
    let ens = input.ensemble;
    let services = ens
        .spec
        .variants
        .iter()
        .map(|v| desired::variant_service(ens, &v.name))
        .collect::<Result<_, _>>()?;
    Ok(Shared {
        services,
        aggregator: Aggregator {
            configmap: desired::aggregator_configmap(ens, m, text)?,
            deployment: desired::aggregator_deployment(ens, input.config)?,
            service: desired::aggregator_service(ens)?,
        },
    })
}

/// The plan for a spec that cannot be carried out: touch nothing, say why.
fn invalid(input: &Inputs<'_>, old: &VariantEnsembleStatus, why: String) -> Plan {
    let ens = input.ensemble;
    let g = ens.metadata.generation;
    let now = input.now;
    let mut status = old.clone();
    status.observed_generation = g;
    status.desired_variants = i32::try_from(ens.spec.variants.len()).unwrap_or(i32::MAX);
    status.conditions = vec![
        condition(
            &old.conditions,
            ConditionType::Ready,
            false,
            "InvalidSpec",
            why.clone(),
            g,
            now,
        ),
        condition(
            &old.conditions,
            ConditionType::Degraded,
            true,
            "InvalidSpec",
            why.clone(),
            g,
            now,
        ),
        condition(
            &old.conditions,
            ConditionType::Progressing,
            false,
            "InvalidSpec",
            why.clone(),
            g,
            now,
        ),
    ];
    let before = old
        .condition(ConditionType::Ready)
        .map(|c| (c.reason.as_str(), c.message.as_str()));
    let events = if before == Some(("InvalidSpec", why.as_str())) {
        vec![]
    } else {
        vec![Note {
            warning: true,
            reason: "InvalidSpec",
            action: "Validate",
            message: why,
        }]
    };
    Plan {
        status,
        events,
        ..Plan::default()
    }
}

#[cfg(test)]
mod tests;
