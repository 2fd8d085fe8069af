//! The aggregator's pods: those on failed or vanished nodes are force-deleted, so that their ReplicaSet starts
//! replacements on live nodes now instead of after Kubernetes' 300 s `unreachable` toleration.

use super::{Deletion, Note, Plan};
use crate::health::{FailureReason, Health};
use crate::observe;
use crate::placement::NodeInfo;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Plans the deletions of aggregator pods on failed or vanished nodes (which replicas serve is
/// [`super::served`]'s question).
pub fn judge(pods: &[Pod], nodes: &BTreeMap<&str, &NodeInfo>, out: &mut Plan) {
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
}
