//! The VariantEnsemble operator: pure decision logic (health, placement, desired objects, status) and the thin
//! controller shell that observes the cluster, applies what the logic decided and reports it.

pub mod config;
pub mod desired;
pub mod hash;
pub mod health;
pub mod placement;
pub mod quantity;

#[cfg(test)]
mod fixtures;
