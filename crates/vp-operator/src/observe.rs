//! Reading what the cluster reports: node liveness and capacity, pod readiness and failure, resource requests.
//! Pure conversions from Kubernetes objects to the small types the decision logic works on.

use crate::health::{Health, Liveness};
use crate::placement::NodeInfo;
use crate::quantity;
use k8s_openapi::api::core::v1::{Node, Pod, ResourceRequirements};
use kube::ResourceExt;
use std::time::Duration;

/// A pod whose container restarted this often and is in CrashLoopBackOff is replaced (elsewhere if possible).
pub const CRASHLOOP_RESTARTS: i32 = 3;

/// Liveness of a node, given how long its Lease has been silent (operator clock).
pub fn liveness(node: &Node, lease_silent_for: Option<Duration>) -> Liveness {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status == "True");
    Liveness {
        ready,
        lease_silent_for,
        gone: node.metadata.deletion_timestamp.is_some(),
    }
}

/// A node as placement sees it; unparsable allocatable values count as zero (the node is then never chosen).
pub fn node_info(node: &Node, health: Health, used: (f64, f64)) -> NodeInfo {
    let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |k: &str| {
        alloc
            .and_then(|a| a.get(k))
            .and_then(|q| quantity::parse(&q.0).ok())
            .unwrap_or(0.0)
    };
    let spec = node.spec.as_ref();
    NodeInfo {
        name: node.name_any(),
        labels: node.labels().clone(),
        taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        cpu: get("cpu"),
        memory: get("memory"),
        used_cpu: used.0,
        used_memory: used.1,
        health,
    }
}

/// CPU (cores) and memory (bytes) requests of a container's resources; a missing or unparsable value is 0.
pub fn requests(r: Option<&ResourceRequirements>) -> (f64, f64) {
    let req = r.and_then(|r| r.requests.as_ref());
    let get = |k: &str| {
        req.and_then(|m| m.get(k))
            .and_then(|q| quantity::parse(&q.0).ok())
            .unwrap_or(0.0)
    };
    (get("cpu"), get("memory"))
}

/// Sum of the requests of a pod's containers.
pub fn pod_requests(pod: &Pod) -> (f64, f64) {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| requests(c.resources.as_ref()))
        .fold((0.0, 0.0), |(a, b), (c, m)| (a + c, b + m))
}

/// Node the pod is bound to.
pub fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod's Ready condition last changed (RFC 3339 string as stored).
pub fn pod_ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    ready_condition(pod)
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Why a running pod is not ready, as its kubelet says (e.g. a failing readiness probe); None while it starts.
pub fn pod_unready_message(pod: &Pod) -> Option<String> {
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    ready_condition(pod)
        .filter(|c| running && c.status == "False")
        .and_then(|c| c.message.clone())
        .filter(|m| !m.is_empty())
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
}

/// Why a pod is beyond saving on its own: it ended (Failed/Succeeded, e.g. evicted) or crash-loops.
#[derive(Clone, Debug, PartialEq)]
pub enum PodFailure {
    /// Phase Failed or Succeeded; the text has the kubelet's reason and message.
    Ended(String),
    /// CrashLoopBackOff after [`CRASHLOOP_RESTARTS`] restarts.
    CrashLoop(String),
}

/// Whether and why the pod has failed.
pub fn pod_failure(pod: &Pod) -> Option<PodFailure> {
    let status = pod.status.as_ref()?;
    if let Some(phase @ ("Failed" | "Succeeded")) = status.phase.as_deref() {
        let why = [status.reason.as_deref(), status.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(": {}", why.join(": "))
        };
        return Some(PodFailure::Ended(format!("pod {phase}{why}")));
    }
    status.container_statuses.iter().flatten().find_map(|c| {
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref())?;
        (waiting.reason.as_deref() == Some("CrashLoopBackOff")
            && c.restart_count >= CRASHLOOP_RESTARTS)
            .then(|| {
                PodFailure::CrashLoop(format!(
                    "container {} crash-looping after {} restarts",
                    c.name, c.restart_count
                ))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn nodes_from_fixture() {
        let nodes = fixtures::nodes();
        let a = node_info(&nodes[0], Health::Healthy, (0.5, 0.0));
        assert_eq!(
            (a.cpu, a.memory, a.used_cpu),
            (4.0, 8.0 * 1024.0 * 1024.0 * 1024.0, 0.5)
        );
        let b = node_info(&nodes[1], Health::Healthy, (0.0, 0.0));
        assert_eq!(b.cpu, 2.0);
        let c = node_info(&nodes[2], Health::Healthy, (0.0, 0.0));
        assert_eq!(c.taints.len(), 1);
        assert!(node_info(&nodes[3], Health::Healthy, (0.0, 0.0)).unschedulable);
        assert_eq!(liveness(&nodes[0], None).ready, Some(true));
    }

    #[test]
    fn pod_failures() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: p}\nstatus: {phase: Failed, reason: Evicted, message: 'low on memory'}",
        )
        .expect("pod");
        assert_eq!(
            pod_failure(&pod),
            Some(PodFailure::Ended(
                "pod Failed: Evicted: low on memory".into()
            ))
        );
        let looping: Pod = serde_yaml::from_str(
            "metadata: {name: p}\nstatus: {phase: Running, containerStatuses: [{name: variant, image: i, imageID: '', ready: false, restartCount: 4, state: {waiting: {reason: CrashLoopBackOff}}}]}",
        )
        .expect("pod");
        assert!(
            matches!(pod_failure(&looping), Some(PodFailure::CrashLoop(m)) if m.contains("4 restarts"))
        );
        let fine: Pod = serde_yaml::from_str(
            "metadata: {name: p}\nstatus: {phase: Running, conditions: [{type: Ready, status: 'True'}]}",
        )
        .expect("pod");
        assert_eq!(pod_failure(&fine), None);
        assert!(pod_ready(&fine));
        assert_eq!(pod_unready_message(&fine), None);
    }

    #[test]
    fn why_a_running_pod_is_not_ready() {
        let failing: Pod = serde_yaml::from_str(
            "metadata: {name: p}\nstatus: {phase: Running, conditions: [{type: Ready, status: 'False', reason: ContainersNotReady, message: 'HTTP probe failed with statuscode: 503'}]}",
        )
        .expect("pod");
        assert_eq!(
            pod_unready_message(&failing).as_deref(),
            Some("HTTP probe failed with statuscode: 503")
        );
        let starting: Pod = serde_yaml::from_str(
            "metadata: {name: p}\nstatus: {phase: Pending, conditions: [{type: Ready, status: 'False', message: 'containers with unready status: [variant]'}]}",
        )
        .expect("pod");
        assert_eq!(pod_unready_message(&starting), None, "still starting");
    }
}
