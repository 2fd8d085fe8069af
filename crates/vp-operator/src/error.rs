//! The operator's one error type. Each variant has a short metric label (`vp_operator_reconcile_errors_total`).

use thiserror::Error;

/// What can go wrong in a reconcile.
#[derive(Debug, Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("kubernetes API call failed while {context}: {source}")]
    Kube {
        /// What the operator was doing.
        context: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A desired object could not be built.
    #[error(transparent)]
    Build(#[from] crate::desired::BuildError),
    /// A write was refused: this replica no longer leads.
    #[error(transparent)]
    NotLeading(#[from] crate::gate::Closed),
    /// The ensemble lacks a namespace (it is namespaced; only a malformed object can lack it).
    #[error("ensemble {0} has no namespace")]
    NoNamespace(String),
}

impl Error {
    /// Wraps a client error with what the operator was doing.
    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::Build(_) => "build",
            Self::NotLeading(_) => "not_leading",
            Self::NoNamespace(_) => "no_namespace",
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
