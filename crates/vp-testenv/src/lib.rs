//! A real Kubernetes control plane for integration tests.
//!
//! [`ControlPlane`] runs the `vp-controlplane` binary built by `scripts/setup-controlplane.sh` (embedded etcd,
//! the upstream kube-apiserver, kube-controller-manager and kube-scheduler, and a simulator for kubelet-less
//! edge nodes) on loopback, and hands out [`kube::Client`]s for it. Default Kubernetes settings apply (node
//! monitor grace period, eviction tolerations, ...) unless [`StartOptions`] overrides them.
//!
//! Two ways to use it:
//! - [`ControlPlane::shared`]: one control plane per test binary, started by the first test that asks and
//!   stopped when the test binary exits. Each test works in its own [`TestNamespace`] and gives the nodes it adds
//!   names from [`unique_name`] and a label of its own (select them with a nodeSelector), because nodes are
//!   cluster-wide and tests run in parallel.
//! - [`ControlPlane::start`]: a private control plane with its own options, stopped when dropped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vp_testenv::Error> {
//! use vp_testenv::{ControlPlane, NodeSpec};
//! let cp = ControlPlane::shared().await?;
//! let ns = cp.namespace("demo").await?;
//! let node = cp.add_node(NodeSpec::new(vp_testenv::unique_name("edge")).label("test", ns.name())).await?;
//! cp.kill_node(&node.name).await?; // heartbeats stop; the node controller marks it Ready=Unknown in ~50 s
//! cp.revive_node(&node.name).await?;
//! let client = ns.client().clone();
//! # let _ = client; Ok(()) }
//! ```
//!
//! [`Proxy`] is a pausable TCP proxy in front of the API server: give a client under test a kubeconfig or
//! client through it, then freeze, thaw or cut its traffic while the rest of the cluster goes on.
//!
//! When the binary is missing the calls fail with [`Error::BinaryMissing`], whose message says to run
//! `scripts/setup.sh`. Set `VP_TESTENV_DATA_DIR` to the data directory of a control plane started with
//! `scripts/controlplane.sh up` to make [`ControlPlane::shared`] use it instead of starting one.

mod binary;
mod control_plane;
mod error;
mod http;
mod namespace;
mod nodes;
mod proxy;
mod shared;
mod state;
pub mod wait;

pub use binary::{BINARY_ENV, binary_path};
pub use control_plane::{ControlPlane, StartOptions};
pub use error::Error;
pub use namespace::{TestNamespace, unique_name};
pub use nodes::{NodeInfo, NodeSpec, NodeState};
pub use proxy::Proxy;
pub use shared::DATA_DIR_ENV;
pub use state::State;
