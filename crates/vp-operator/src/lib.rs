//! The VariantEnsemble operator: pure decision logic (health, placement, desired objects, the plan, status) and
//! the thin shell around it: the reconcile pipeline ([`reconcile`]), the controller's watches
//! ([`controller`]), leader election ([`leader`]) and metrics.

pub mod applied;
pub mod conditions;
pub mod config;
pub mod controller;
pub mod desired;
pub mod disruption;
pub mod error;
pub mod failover;
pub mod gate;
pub mod hash;
pub mod health;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod placement;
pub mod plan;
pub mod quantity;
pub mod reconcile;

#[cfg(test)]
mod fixtures;
