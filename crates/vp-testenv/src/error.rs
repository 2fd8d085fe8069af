//! The one error type of the crate: every failure names what was being done and where to look.

use std::path::PathBuf;

/// What went wrong while starting, using or stopping the test control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control plane binary has not been built on this machine.
    #[error(
        "the test control plane binary is missing at {path}: run scripts/setup.sh (or scripts/setup-controlplane.sh) \
         to build it, or point {env} at it"
    )]
    BinaryMissing { path: PathBuf, env: &'static str },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The control plane process exited before it became ready.
    #[error("the control plane exited during start ({status}); last lines of {log}:\n{tail}")]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    /// The control plane did not become ready in time.
    #[error("the control plane was not ready after {seconds} s; last lines of {log}:\n{tail}")]
    StartTimeout {
        seconds: u64,
        log: PathBuf,
        tail: String,
    },
    /// The shared control plane of this test binary failed to start (for an earlier test, or this one).
    #[error("the shared test control plane could not be started: {0}")]
    Shared(String),
    /// The state file of a running control plane could not be read.
    #[error("control plane state {path}: {message}")]
    State { path: PathBuf, message: String },
    /// Building a client from the kubeconfig failed.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The node simulator refused a request or could not be reached.
    #[error("node simulator: {0}")]
    Simulator(String),
    /// An invalid argument, e.g. a node name that is not a DNS subdomain.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A [`crate::wait::until`] condition did not hold in time.
    #[error("timed out after {seconds:.1} s waiting for {what}{last}")]
    Timeout {
        what: String,
        seconds: f64,
        last: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            what: what.into(),
            source,
        }
    }
}
