//! Simulated edge nodes: their description ([`NodeSpec`]), their state ([`NodeInfo`]) and the operations a test
//! performs on them through the control plane's node simulator.
//!
//! A live node renews its Lease in `kube-node-lease` every 10 s and reports `Ready=True`, and every pod bound to
//! it becomes Running and Ready. Killing or partitioning it stops the heartbeats, so the node lifecycle
//! controller marks it `Ready=Unknown` and taints it `node.kubernetes.io/unreachable` after the node monitor
//! grace period (50 s by default). Reviving it reports Ready at once and resumes heartbeats.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ControlPlane, Error, http};

/// A simulated node to add. Unset fields get the simulator's defaults: 4 CPUs, 4Gi memory, 110 pods, arm64.
/// Every node also carries `kubernetes.io/{hostname,os,arch}`, `node-role.kubernetes.io/edge` and
/// `vp.dev/simulated-node=true`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cpu: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub memory: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub pods: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub arch: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl NodeSpec {
    /// A node with default capacity.
    pub fn new(name: impl Into<String>) -> Self {
        NodeSpec {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the CPU capacity (a Kubernetes quantity such as `"2"` or `"1500m"`).
    pub fn cpu(mut self, cpu: impl Into<String>) -> Self {
        self.cpu = cpu.into();
        self
    }

    /// Sets the memory capacity (a Kubernetes quantity such as `"2Gi"`).
    pub fn memory(mut self, memory: impl Into<String>) -> Self {
        self.memory = memory.into();
        self
    }

    /// Sets the pod capacity.
    pub fn pods(mut self, pods: u32) -> Self {
        self.pods = pods;
        self
    }

    /// Sets the architecture (`amd64`, `arm64`, `arm`, `riscv64`).
    pub fn arch(mut self, arch: impl Into<String>) -> Self {
        self.arch = arch.into();
        self
    }
}

/// What a simulated node is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum NodeState {
    /// Heartbeats are kept up and pods run.
    Alive,
    /// Power lost: no heartbeats; on revive its containers restart.
    Dead,
    /// Network lost: no heartbeats; on revive its pods are still running.
    Partitioned,
}

/// A simulated node as the simulator reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub state: NodeState,
    /// The node's InternalIP (in 127.1.0.0/16: loopback, so nothing ever leaves the machine).
    pub ip: String,
}

impl ControlPlane {
    /// Registers a simulated node and starts its heartbeats. It becomes Ready at once; the node lifecycle
    /// controller removes its `not-ready` taint within seconds.
    pub async fn add_node(&self, spec: NodeSpec) -> Result<NodeInfo, Error> {
        let body = serde_json::to_string(&spec).map_err(|e| Error::Invalid(e.to_string()))?;
        self.sim_call("POST", "/nodes", Some(&body), 201).await
    }

    /// Stops a node's heartbeats as if it lost power.
    pub async fn kill_node(&self, name: &str) -> Result<NodeInfo, Error> {
        self.sim_call("POST", &node_path(name, "/kill")?, None, 200)
            .await
    }

    /// Stops a node's heartbeats as if it lost its network; its pods keep running.
    pub async fn partition_node(&self, name: &str) -> Result<NodeInfo, Error> {
        self.sim_call("POST", &node_path(name, "/partition")?, None, 200)
            .await
    }

    /// Brings a killed or partitioned node back.
    pub async fn revive_node(&self, name: &str) -> Result<NodeInfo, Error> {
        self.sim_call("POST", &node_path(name, "/revive")?, None, 200)
            .await
    }

    /// Stops a node and deletes its Node object.
    pub async fn remove_node(&self, name: &str) -> Result<(), Error> {
        let reply = http::call(
            &self.state().simulator,
            "DELETE",
            &node_path(name, "")?,
            None,
        )
        .await?;
        expect_status(reply, 204).map(|_| ())
    }

    /// Every simulated node of this control plane.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, Error> {
        self.sim_call("GET", "/nodes", None, 200).await
    }

    async fn sim_call<T: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        want: u16,
    ) -> Result<T, Error> {
        let reply = http::call(&self.state().simulator, method, path, body).await?;
        let body = expect_status(reply, want)?;
        serde_json::from_str(&body)
            .map_err(|e| Error::Simulator(format!("unreadable reply {body:?}: {e}")))
    }
}

/// The control API path of a node; rejects names that could not be node names (and so cannot escape the path).
fn node_path(name: &str, suffix: &str) -> Result<String, Error> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !ok {
        return Err(Error::Invalid(format!(
            "{name:?} is not a valid node name (a DNS subdomain)"
        )));
    }
    Ok(format!("/nodes/{name}{suffix}"))
}

/// Returns the body if the reply has status `want`, else the simulator's error message.
fn expect_status(reply: http::Reply, want: u16) -> Result<String, Error> {
    if reply.status == want {
        return Ok(reply.body);
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let message = serde_json::from_str::<ErrorBody>(&reply.body)
        .map(|e| e.error)
        .unwrap_or(reply.body);
    Err(Error::Simulator(format!(
        "HTTP {}: {}",
        reply.status,
        message.trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_serialises_only_what_is_set() {
        let json = serde_json::to_value(NodeSpec::new("edge-a").label("zone", "z1").cpu("2"))
            .expect("json");
        assert_eq!(
            json,
            serde_json::json!({"name": "edge-a", "labels": {"zone": "z1"}, "cpu": "2"})
        );
    }

    #[test]
    fn node_paths_reject_bad_names() {
        assert_eq!(
            node_path("edge-1", "/kill").expect("valid"),
            "/nodes/edge-1/kill"
        );
        for bad in ["", "Edge", "a/b", "../x", "a b", "x?y"] {
            assert!(
                matches!(node_path(bad, ""), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn error_replies_carry_the_simulator_message() {
        let reply = http::Reply {
            status: 404,
            body: r#"{"error":"no such simulated node: x"}"#.into(),
        };
        let err = expect_status(reply, 200).expect_err("404");
        assert_eq!(
            err.to_string(),
            "node simulator: HTTP 404: no such simulated node: x"
        );
    }

    #[test]
    fn node_info_parses() {
        let info: NodeInfo =
            serde_json::from_str(r#"{"name":"e","state":"Partitioned","ip":"127.1.1.1"}"#)
                .expect("info");
        assert_eq!(info.state, NodeState::Partitioned);
    }
}
