//! The pods of each variant. Move, don't kill: a pod on a failed or deleted node is force-deleted (nothing
//! piles up in Terminating) only in the reconcile that creates its replacement on a healthy node; when no node
//! fits it stays where it is, and a pod on a node whose failure is held (a disrupted zone, a stale view, the
//! eviction rate limit) is not touched at all. Pods that ended (evicted, failed) or crash-loop are replaced,
//! elsewhere if possible; one serving pod is kept where it is; outdated or duplicate pods are removed only once
//! the desired pod serves, so spec changes do not take a variant down. Then placement finds nodes for variants
//! without a pod, and each variant's status says what serves, what does not and why.

use super::{Deletion, Inputs, Note, Plan, Recovery, Reschedule};
use crate::desired::{
    self, FAILED_SINCE, FAILURE_REASON, Replacement, TEMPLATE_HASH, VariantTemplate,
};
use crate::health::{FailureReason, Health, Hold};
use crate::observe::{self, PodFailure};
use crate::placement::{self, Constraints, Demand, NodeInfo, Placement};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use vp_api::labels::VARIANT;
use vp_api::{EnsembleManifest, VariantEnsembleStatus, VariantSpec, VariantStatus};

/// What the variants came to, for the status summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariantsOutcome {
    /// Variants with a serving pod, in spec order.
    pub ready: Vec<String>,
    /// Variants placed whose pod is not serving yet.
    pub starting: usize,
    /// Variants left on nodes where moves are paused (a disrupted zone or a stale view), with why.
    pub paused: Vec<String>,
}

/// A failure that took a variant's pod.
#[derive(Clone, Debug, PartialEq)]
struct Failure {
    /// Metric label (see [`Reschedule::reason`]).
    reason: &'static str,
    /// For people: node and cause.
    why: String,
    /// Node the pod was on.
    from: Option<String>,
    /// When the failure began.
    since: Timestamp,
    /// The pod is still there, on a failed node: it goes only once its replacement has a node.
    stranded: bool,
}

/// What to do with one existing pod.
enum Verdict {
    /// Healthy enough to keep.
    Keep,
    /// Already terminating on a healthy node (or a held one): leave it alone.
    Terminating,
    /// On a failed node: deleted only in the reconcile that creates its replacement on a healthy node.
    Stranded(Failure),
    /// On a node whose failure is held: left alone; the text says why, the flag whether moves are paused.
    Held(String, bool),
    /// Must go.
    Replace {
        failure: Failure,
        /// Delete with grace period 0.
        force: bool,
        /// Do not place the replacement on the same node.
        avoid: bool,
        /// Counts as a reschedule (a pod already being deleted does not).
        counts: bool,
    },
}

/// One variant's pods, judged.
struct Judged<'p> {
    /// Pods worth keeping, the best first (current template, then ready, then name).
    keep: Vec<&'p Pod>,
    /// The first failure that counts as a reschedule.
    failure: Option<Failure>,
    /// Pods on failed nodes, deleted once the replacement has a node.
    stranded: Vec<String>,
    /// Pods on held nodes: why they are not moved, and whether moves are paused.
    held: Option<(String, bool)>,
    /// The pod template for the current spec.
    template: VariantTemplate,
}

fn judge_pod(pod: &Pod, nodes: &BTreeMap<&str, &NodeInfo>, now: Timestamp) -> Verdict {
    let node = observe::pod_node(pod).and_then(|n| nodes.get(n));
    let node_failure: Option<(FailureReason, Option<&Hold>)> = match node {
        None => Some((FailureReason::Gone, None)),
        Some(n) => match &n.health {
            Health::Healthy => None,
            Health::Failed(r) => Some((r.clone(), None)),
            Health::Held(r, h) => Some((r.clone(), Some(h))),
        },
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let from = observe::pod_node(pod).map(str::to_string);
    if let Some((r, hold)) = node_failure {
        let on = from.as_deref().unwrap_or("?");
        if let Some(h) = hold {
            if deleting {
                return Verdict::Terminating;
            }
            return Verdict::Held(format!("on {on} ({r}), not moved: {h}"), h.is_pause());
        }
        let since = match r {
            FailureReason::LeaseExpired { silent_s } => now
                .checked_sub(jiff::SignedDuration::from_secs(
                    i64::try_from(silent_s).unwrap_or(0),
                ))
                .unwrap_or(now),
            _ => now,
        };
        let failure = Failure {
            reason: r.label(),
            why: format!("{on}: {r}"),
            from,
            since,
            stranded: !deleting,
        };
        if !deleting {
            return Verdict::Stranded(failure);
        }
        // Already being deleted: finish it (grace 0) so that nothing piles up in Terminating.
        return Verdict::Replace {
            failure,
            force: true,
            avoid: false,
            counts: false,
        };
    }
    if deleting {
        return Verdict::Terminating;
    }
    let failure = |reason, why| Failure {
        reason,
        why,
        from: from.clone(),
        since: now,
        stranded: false,
    };
    match observe::pod_failure(pod) {
        Some(PodFailure::Ended(why)) => Verdict::Replace {
            failure: failure("PodFailed", why),
            force: true,
            avoid: true,
            counts: true,
        },
        Some(PodFailure::CrashLoop(why)) => Verdict::Replace {
            failure: failure("CrashLoop", why),
            force: false,
            avoid: true,
            counts: true,
        },
        None => Verdict::Keep,
    }
}

fn template_hash(pod: &Pod) -> Option<&str> {
    pod.annotations().get(TEMPLATE_HASH).map(String::as_str)
}

/// Judges one variant's pods (deleting what must go) and says what placement should know of it.
fn judge_variant<'p>(
    input: &Inputs<'_>,
    v: &VariantSpec,
    weight: u64,
    template: VariantTemplate,
    pods: &[&'p Pod],
    nodes: &BTreeMap<&str, &NodeInfo>,
    out: &mut Plan,
) -> (Judged<'p>, Option<Demand>) {
    let mut judged = Judged {
        keep: vec![],
        failure: None,
        stranded: vec![],
        held: None,
        template,
    };
    let mut avoid = vec![];
    for pod in pods {
        match judge_pod(pod, nodes, input.now) {
            Verdict::Keep => judged.keep.push(pod),
            Verdict::Terminating => {}
            Verdict::Held(why, paused) => {
                judged.held.get_or_insert((why, paused));
            }
            Verdict::Stranded(failure) => {
                judged.stranded.push(pod.name_any());
                if judged.failure.is_none() {
                    judged.failure = Some(failure);
                }
            }
            Verdict::Replace {
                failure,
                force,
                avoid: a,
                counts,
            } => {
                if a {
                    avoid.extend(failure.from.clone());
                }
                out.delete.push(Deletion {
                    name: pod.name_any(),
                    force,
                    why: failure.why.clone(),
                });
                if counts && judged.failure.is_none() {
                    judged.failure = Some(failure);
                }
            }
        }
    }
    let current = judged.template.hash.clone();
    judged.keep.sort_by_key(|p| {
        (
            template_hash(p) != Some(current.as_str()),
            !observe::pod_ready(p),
            p.name_any(),
        )
    });
    let ens = input.ensemble;
    let (cpu, memory) = observe::requests(
        v.resources
            .as_ref()
            .or(ens.spec.resources.as_ref())
            .or(Some(&input.config.variant_resources)),
    );
    let demand = Demand {
        name: v.name.clone(),
        weight,
        cpu,
        memory,
        current: judged
            .keep
            .first()
            .and_then(|p| observe::pod_node(p))
            .map(str::to_string),
        avoid,
    };
    // A variant whose only pod is on a held node stays unplaced: it is not moved now.
    let place = judged.held.is_none() || !judged.keep.is_empty();
    (judged, place.then_some(demand))
}

/// Plans every variant's pods and writes their status entries; returns what they came to.
pub fn plan(
    input: &Inputs<'_>,
    manifest: &EnsembleManifest,
    nodes: &BTreeMap<&str, &NodeInfo>,
    old: &VariantEnsembleStatus,
    out: &mut Plan,
) -> VariantsOutcome {
    let ens = input.ensemble;
    let spec_names: BTreeSet<&str> = ens.spec.variants.iter().map(|v| v.name.as_str()).collect();
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

    let mut judged: BTreeMap<&str, Judged<'_>> = BTreeMap::new();
    let mut demands = Vec::new();
    for v in &ens.spec.variants {
        let Some(mv) = manifest.variant(&v.name) else {
            continue;
        };
        let Ok(template) = desired::variant_template(ens, v, mv, input.config) else {
            continue;
        };
        let pods = by_variant
            .get(v.name.as_str())
            .map_or(&[][..], Vec::as_slice);
        let (j, demand) = judge_variant(input, v, mv.macs, template, pods, nodes, out);
        demands.extend(demand);
        judged.insert(v.name.as_str(), j);
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
    let mut outcome = VariantsOutcome::default();
    for v in &ens.spec.variants {
        if let Some(j) = judged.get(v.name.as_str()) {
            let prev = old_variants.get(v.name.as_str()).copied();
            let status = settle(input, v, j, &placed, prev, out, &mut outcome);
            out.status.variants.push(status);
        }
    }
    outcome
}

/// Carries out placement's answer for one variant (create the desired pod, retire the others once it serves),
/// records reschedules, recoveries and events, and returns the variant's status.
fn settle(
    input: &Inputs<'_>,
    v: &VariantSpec,
    j: &Judged<'_>,
    placed: &Placement,
    prev: Option<&VariantStatus>,
    out: &mut Plan,
    outcome: &mut VariantsOutcome,
) -> VariantStatus {
    let ens = input.ensemble;
    let assigned = placed.assigned.get(&v.name);
    let mut message = None;
    let mut desired_name = None;
    if let Some(node) = assigned {
        let name = desired::variant_pod_name(&ens.name_any(), &v.name, node, &j.template.hash);
        let desired_pod = j.keep.iter().find(|p| p.name_any() == name);
        let desired_ready = desired_pod.is_some_and(|p| observe::pod_ready(p));
        if desired_pod.is_none() {
            let reason = match &j.failure {
                Some(f) => format!("replacing pod lost to: {}", f.why),
                None if j.keep.is_empty() => "initial placement".to_string(),
                None => "spec changed or node no longer eligible".to_string(),
            };
            let replacement = j.failure.as_ref().map(|f| Replacement {
                failed_since: f.since,
                reason: f.reason,
            });
            match desired::variant_pod(
                ens,
                &v.name,
                &j.template,
                node,
                &reason,
                replacement.as_ref(),
            ) {
                Ok(pod) => out.create.push(pod),
                Err(e) => message = Some(e.to_string()),
            }
        }
        // Pods on failed nodes go now that the replacement has a node.
        for p in &j.stranded {
            out.delete.push(Deletion {
                name: p.clone(),
                force: true,
                why: j
                    .failure
                    .as_ref()
                    .map_or_else(|| "node failed".into(), |f| f.why.clone()),
            });
        }
        // Other pods go once the desired one serves; unready ones go at once.
        for p in j.keep.iter().filter(|p| p.name_any() != name) {
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
    // A pod left on a failed node (no node fits) has not moved yet: counted when it does.
    let moved = j
        .failure
        .as_ref()
        .filter(|f| assigned.is_some() || !f.stranded);
    if let Some(f) = moved {
        out.reschedules.push(Reschedule {
            variant: v.name.clone(),
            reason: f.reason,
            from: f.from.clone(),
            to: assigned.cloned(),
        });
        let note = match assigned {
            Some(to) => format!(
                "variant {} moved from {} to {to}: {}",
                v.name,
                f.from.as_deref().unwrap_or("?"),
                f.why
            ),
            None => format!(
                "variant {} lost its pod ({}) and cannot be placed",
                v.name, f.why
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
        message = Some(match j.failure.as_ref().filter(|f| f.stranded) {
            Some(f) => format!(
                "left on {} ({}); no healthy node to move to: {why}",
                f.from.as_deref().unwrap_or("?"),
                f.why
            ),
            None => why.clone(),
        });
        if !prev
            .and_then(|p| p.message.as_deref())
            .is_some_and(|m| m.ends_with(why.as_str()))
        {
            out.events.push(Note {
                warning: true,
                reason: "FailedPlacement",
                action: "Place",
                message: format!("variant {}: {why}", v.name),
            });
        }
    }
    let deleting: BTreeSet<String> = out.delete.iter().map(|d| d.name.clone()).collect();
    let serving = j
        .keep
        .iter()
        .filter(|p| observe::pod_ready(p) && !deleting.contains(&p.name_any()))
        .min_by_key(|p| (Some(p.name_any()) != desired_name, p.name_any()))
        .copied();
    let ready = serving.is_some();
    if let Some((why, paused)) = j.held.as_ref().filter(|_| !ready && assigned.is_none()) {
        message = Some(why.clone());
        if *paused {
            outcome.paused.push(format!("{}: {why}", v.name));
        }
    }
    if ready {
        outcome.ready.push(v.name.clone());
    } else if let Some(node) = assigned {
        outcome.starting += 1;
        message = message.or_else(|| Some(format!("pod starting on {node}")));
    }
    if let (Some(p), Some(prev)) = (serving, prev)
        && !prev.ready
        && let Some(r) = recovery(&v.name, p, input.now)
    {
        out.recovered.push(r);
    }
    if let Some(f) = j.failure.as_ref().filter(|_| ready) {
        message = Some(format!("moved after: {}", f.why));
    }
    let since = match prev {
        Some(p) if p.ready == ready => p.since.clone(),
        _ => Some(Time(input.now)),
    };
    VariantStatus {
        name: v.name.clone(),
        node: assigned.cloned(),
        pod: serving.map(|p| p.name_any()).or(desired_name),
        ready,
        since,
        reschedules: prev.map_or(0, |p| p.reschedules) + i32::from(moved.is_some()),
        message,
    }
}

/// The failover latency of a replacement pod that now serves (None: not a replacement).
fn recovery(variant: &str, pod: &Pod, now: Timestamp) -> Option<Recovery> {
    let since = pod
        .annotations()
        .get(FAILED_SINCE)?
        .parse::<Timestamp>()
        .ok()?;
    let at = observe::pod_ready_since(pod).unwrap_or(now);
    let after = Duration::try_from(at.duration_since(since)).ok()?;
    Some(Recovery {
        variant: variant.to_string(),
        reason: pod
            .annotations()
            .get(FAILURE_REASON)
            .cloned()
            .unwrap_or_else(|| "Unknown".into()),
        after,
    })
}
