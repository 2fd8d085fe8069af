//! The aggregator's pods. Move, don't kill: one bound to a failed or vanished node is force-deleted (so its
//! ReplicaSet starts a replacement now instead of after Kubernetes' 300 s `unreachable` toleration) only when a
//! healthy node can take the replacement now; otherwise, and on a node whose failure is held (a disrupted
//! zone, a stale view), it is left where it is and the status says why.
//!
//! The replacement is placed by kube-scheduler, which does not share the operator's view of node health: until
//! the node lifecycle controller taints a silent node (tens of seconds), the scheduler may bind the replacement
//! to that same node, where it never starts. Deleting such a pod again would only repeat that (a create/delete
//! loop, twice a second in test-e2e), so a pod that never started on a failed node is left there until the node
//! takes no new pods (tainted or cordoned); then its replacement goes elsewhere.

use super::{Deletion, Inputs, Note, Plan};
use crate::health::{FailureReason, Health};
use crate::observe;
use crate::placement::{self, Constraints, Demand, NodeInfo};
use k8s_openapi::api::core::v1::{Pod, Toleration};
use kube::ResourceExt;
use std::collections::BTreeMap;
use vp_api::PlacementStrategy;

/// Plans the deletions of aggregator pods on failed or vanished nodes (which replicas serve is
/// [`super::served`]'s question). A pod that stays on a failed node for now is explained in
/// `out.aggregator_held`.
pub fn judge(input: &Inputs<'_>, nodes: &BTreeMap<&str, &NodeInfo>, out: &mut Plan) {
    for pod in input.aggregator_pods {
        let Some(on) = observe::pod_node(pod) else {
            continue;
        };
        let failure = match nodes.get(on).map(|n| &n.health) {
            Some(Health::Healthy) => None,
            Some(Health::Failed(r)) => Some((r.clone(), None)),
            Some(Health::Held(r, h)) => Some((r.clone(), Some(h))),
            None => Some((FailureReason::Gone, None)),
        };
        let Some((r, hold)) = failure else {
            continue;
        };
        let why = format!("{on}: {r}");
        if let Some(h) = hold {
            out.aggregator_held = Some(format!(
                "aggregator pod {} on {on} ({r}), not moved: {h}",
                pod.name_any()
            ));
            continue;
        }
        if pod.metadata.deletion_timestamp.is_none() {
            if !started(pod)
                && let Some(node) = input.nodes.iter().find(|n| n.name == on)
                && open_to(node, &input.ensemble.spec.placement.tolerations)
            {
                out.aggregator_held = Some(format!(
                    "aggregator pod {} was scheduled to {why} and never started; left there until the node \
                     takes no new pods (else its replacement would be scheduled there again)",
                    pod.name_any()
                ));
                continue;
            }
            if let Err(no_room) = room_for_replacement(input, on) {
                out.aggregator_held = Some(format!(
                    "aggregator pod {} left on {why}; no healthy node to move to: {no_room}",
                    pod.name_any()
                ));
                continue;
            }
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
}

/// Whether the kubelet ever acknowledged the pod (it sets `status.startTime`): one that never started on a failed
/// node was bound there after the node went silent.
fn started(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| s.start_time.is_some())
}

/// Whether kube-scheduler may still bind a new pod with `tolerations` to `node`: not cordoned, and no taint with
/// effect NoSchedule or NoExecute that they do not tolerate. The node lifecycle controller's health taints count
/// here (unlike in [`placement`]), except `NoExecute` ones: every pod tolerates those for 300 s by default.
fn open_to(node: &NodeInfo, tolerations: &[Toleration]) -> bool {
    !node.unschedulable
        && !node.taints.iter().any(|t| {
            let closes = t.effect == "NoSchedule"
                || (t.effect == "NoExecute" && !placement::HEALTH_TAINTS.contains(&t.key.as_str()));
            closes && !tolerations.iter().any(|tol| placement::tolerates(tol, t))
        })
}

/// Whether a healthy node can take an aggregator pod now (the placement rules, with the aggregator's
/// requests; Ok(node) names one), else why not.
fn room_for_replacement(input: &Inputs<'_>, failed: &str) -> Result<String, String> {
    let ens = input.ensemble;
    let (cpu, memory) = observe::requests(
        ens.spec
            .aggregator
            .resources
            .as_ref()
            .or(Some(&input.config.aggregator_resources)),
    );
    let demand = Demand {
        name: "aggregator".into(),
        weight: 0,
        cpu,
        memory,
        current: None,
        avoid: vec![failed.to_string()],
    };
    let constraints = Constraints {
        strategy: PlacementStrategy::Packed,
        node_selector: ens.spec.placement.node_selector.clone(),
        affinity: ens.spec.placement.affinity.clone(),
        tolerations: ens.spec.placement.tolerations.clone(),
    };
    let mut placed = placement::place(&[demand], input.nodes, &constraints);
    match placed.assigned.remove("aggregator") {
        Some(node) => Ok(node),
        None => Err(placed
            .unplaced
            .remove("aggregator")
            .unwrap_or_else(|| "no node fits".into())),
    }
}
