//! The VariantEnsemble operator: pure decision logic (health, placement, desired objects, status) and the thin
//! controller shell that observes the cluster, applies what the logic decided and reports it.

pub mod applied;
pub mod conditions;
pub mod config;
pub mod controller;
pub mod desired;
pub mod error;
pub mod failover;
pub mod hash;
pub mod health;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod placement;
pub mod plan;
pub mod quantity;
pub mod telemetry;

#[cfg(test)]
mod fixtures;
