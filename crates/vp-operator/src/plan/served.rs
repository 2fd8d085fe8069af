//! Which aggregator replicas serve, and which config they serve. A replica serves when its pod is Ready, not
//! terminating and on a healthy node (a pod on a silent node may still look Ready to the API server); it serves
//! the current config when its pod carries the current [`CONFIG_DIGEST`] (its readiness probe passes only
//! once the aggregator has loaded the config with that digest, see docs/operator.md, "Ready"). A terminating
//! replica of an older config no longer serves, but it is still behind the Service until it is gone (each node's
//! kube-proxy drops it a moment later), so it is counted apart, as leaving.

use crate::desired::CONFIG_DIGEST;
use crate::health::Health;
use crate::observe;
use crate::placement::NodeInfo;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// How many aggregator replicas serve, by config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggregatorServing {
    /// Serving the current config.
    pub current: usize,
    /// Serving another (older) config: a rollout that is not done, or stuck.
    pub stale: usize,
    /// Terminating replicas of another config on a healthy node, not gone yet: a rollout that is not done.
    pub leaving: usize,
}

impl AggregatorServing {
    /// Some replica answers, whichever config it serves.
    pub fn any(&self) -> bool {
        self.current + self.stale > 0
    }
}

/// Counts the serving aggregator replicas among `pods` by whether they serve the config `digest`.
pub fn aggregators(
    pods: &[Pod],
    nodes: &BTreeMap<&str, &NodeInfo>,
    digest: &str,
) -> AggregatorServing {
    let mut out = AggregatorServing::default();
    for pod in pods {
        let healthy_node = observe::pod_node(pod)
            .and_then(|n| nodes.get(n))
            .is_some_and(|n| n.health == Health::Healthy);
        let current = pod.annotations().get(CONFIG_DIGEST).map(String::as_str) == Some(digest);
        if !healthy_node {
            continue;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            out.leaving += usize::from(!current);
            continue;
        }
        if !observe::pod_ready(pod) {
            continue;
        }
        if current {
            out.current += 1;
        } else {
            out.stale += 1;
        }
    }
    out
}
