//! The contract between the operator and the data plane, as the data plane's own types (re-exported from
//! vp-core, never copied): the aggregator config file the operator writes, the top-k rule, and how the CRD's
//! combine rule maps onto the aggregator's. The operator writes exactly what the aggregator reads, and checks k
//! with the same function the variant servers use.

pub use vp_core::{
    AggregatorConfig, ConfigError, KError, VariantEndpoint, config_digest, validate_k,
};

/// The aggregator's combine rule (config file spelling `soft_vote`, `majority`).
pub use vp_core::CombineRule as DataPlaneCombineRule;

use crate::spec::CombineRule;

impl From<CombineRule> for DataPlaneCombineRule {
    /// The rule the aggregator runs for the CRD's rule. A weighted soft vote is the aggregator's soft vote with
    /// per-variant weights in the config file (see [`CombineRule::weighs_by_accuracy`]).
    fn from(rule: CombineRule) -> Self {
        match rule {
            CombineRule::SoftVote | CombineRule::WeightedSoftVote => DataPlaneCombineRule::SoftVote,
            CombineRule::MajorityVote => DataPlaneCombineRule::Majority,
        }
    }
}

impl CombineRule {
    /// Whether each variant's vote is weighted by its test accuracy from the manifest.
    pub fn weighs_by_accuracy(self) -> bool {
        self == CombineRule::WeightedSoftVote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_rule_has_an_aggregator_rule() {
        assert_eq!(
            DataPlaneCombineRule::from(CombineRule::SoftVote),
            DataPlaneCombineRule::SoftVote
        );
        assert_eq!(
            DataPlaneCombineRule::from(CombineRule::WeightedSoftVote),
            DataPlaneCombineRule::SoftVote
        );
        assert_eq!(
            DataPlaneCombineRule::from(CombineRule::MajorityVote),
            DataPlaneCombineRule::Majority
        );
        assert!(CombineRule::WeightedSoftVote.weighs_by_accuracy());
        assert!(!CombineRule::SoftVote.weighs_by_accuracy());
    }
}
