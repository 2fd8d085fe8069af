//! The combiner: turns the top-k replies of the variants that answered into one answer. Implements the rule of
//! docs/models.md exactly (f64 accumulation in family order, lowest class wins ties) so the manifest's accuracy
//! tables are reproducible, plus an optional majority vote.

use crate::topk::TopK;
use serde::{Deserialize, Serialize};

/// How replies are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CombineRule {
    /// Sum of weight * probability per class; argmax.
    #[default]
    SoftVote,
    /// Each reply casts `weight` votes for its top-1 class; ties broken by the soft vote, then lowest class.
    Majority,
}

/// The combined answer for one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Combined {
    /// Winning class index.
    pub class: usize,
    /// Per-class score, normalised by the total weight of the replies (mean probability for the soft vote,
    /// vote share for majority).
    pub scores: Vec<f64>,
}

/// Combines replies from variants identified by their family index.
#[derive(Debug, Clone)]
pub struct Combiner {
    rule: CombineRule,
    classes: usize,
    /// Weight per family index.
    weights: Vec<f64>,
}

impl Combiner {
    /// A combiner for `classes` classes; `weights[i]` is the weight of family variant i.
    pub fn new(rule: CombineRule, classes: usize, weights: Vec<f64>) -> Self {
        Self {
            rule,
            classes,
            weights,
        }
    }

    /// Plain soft vote with weight 1 for `variants` variants.
    pub fn soft_vote(classes: usize, variants: usize) -> Self {
        Self::new(CombineRule::SoftVote, classes, vec![1.0; variants])
    }

    /// Combines `(family index, reply)` pairs; None when there is no reply. Replies are accumulated in family
    /// order whatever order they arrive in. Class indices outside the class range are ignored.
    pub fn combine(&self, replies: &[(usize, &TopK)]) -> Option<Combined> {
        if replies.is_empty() {
            return None;
        }
        let mut ordered: Vec<(usize, &TopK)> = replies.to_vec();
        ordered.sort_by_key(|(i, _)| *i);
        let mut soft = vec![0.0f64; self.classes];
        let mut votes = vec![0.0f64; self.classes];
        let mut total = 0.0f64;
        for (i, reply) in &ordered {
            let w = self.weights.get(*i).copied().unwrap_or(1.0);
            total += w;
            for &(c, p) in &reply.entries {
                if let Some(s) = soft.get_mut(c) {
                    *s += w * f64::from(p);
                }
            }
            if let Some(v) = reply.entries.first().and_then(|&(c, _)| votes.get_mut(c)) {
                *v += w;
            }
        }
        let class = match self.rule {
            CombineRule::SoftVote => argmax_by(&soft, |c| (soft[c], 0.0)),
            CombineRule::Majority => argmax_by(&votes, |c| (votes[c], soft[c])),
        };
        let raw = if self.rule == CombineRule::SoftVote {
            soft
        } else {
            votes
        };
        let scores = raw
            .iter()
            .map(|s| if total > 0.0 { s / total } else { 0.0 })
            .collect();
        Some(Combined { class, scores })
    }
}

/// Index with the largest key; the lowest index wins ties.
fn argmax_by(v: &[f64], key: impl Fn(usize) -> (f64, f64)) -> usize {
    let mut best = 0;
    for c in 1..v.len() {
        if key(c) > key(best) {
            best = c;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(entries: &[(usize, f32)]) -> TopK {
        TopK {
            entries: entries.to_vec(),
        }
    }

    #[test]
    fn soft_vote_sums_probabilities() {
        let c = Combiner::soft_vote(4, 3);
        let a = t(&[(1, 0.6), (2, 0.3)]);
        let b = t(&[(2, 0.5), (1, 0.4)]);
        let out = c.combine(&[(0, &a), (1, &b)]).expect("answer");
        assert_eq!(out.class, 1);
        assert!((out.scores[1] - 0.5).abs() < 1e-7);
        assert!((out.scores[2] - 0.4).abs() < 1e-7);
        assert_eq!(out.scores[0], 0.0);
    }

    #[test]
    fn ties_go_to_the_lowest_class() {
        let c = Combiner::soft_vote(4, 2);
        let a = t(&[(3, 0.5)]);
        let b = t(&[(2, 0.5)]);
        assert_eq!(c.combine(&[(0, &a), (1, &b)]).map(|x| x.class), Some(2));
    }

    #[test]
    fn arrival_order_does_not_matter() {
        let c = Combiner::soft_vote(3, 3);
        let a = t(&[(0, 0.1), (1, 0.2)]);
        let b = t(&[(1, 0.3), (2, 0.25)]);
        let d = t(&[(2, 0.7)]);
        let x = c.combine(&[(0, &a), (1, &b), (2, &d)]).expect("x");
        let y = c.combine(&[(2, &d), (0, &a), (1, &b)]).expect("y");
        assert_eq!(x, y);
    }

    #[test]
    fn weights_change_the_winner() {
        let a = t(&[(0, 0.6)]);
        let b = t(&[(1, 0.55)]);
        let plain = Combiner::soft_vote(2, 2);
        assert_eq!(plain.combine(&[(0, &a), (1, &b)]).map(|x| x.class), Some(0));
        let weighted = Combiner::new(CombineRule::SoftVote, 2, vec![1.0, 2.0]);
        let out = weighted.combine(&[(0, &a), (1, &b)]).expect("answer");
        assert_eq!(out.class, 1);
        assert!((out.scores[1] - 1.1 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn majority_counts_top1_and_breaks_ties_by_soft_score() {
        let c = Combiner::new(CombineRule::Majority, 3, vec![1.0; 3]);
        let a = t(&[(2, 0.5), (1, 0.4)]);
        let b = t(&[(2, 0.4), (1, 0.35)]);
        let d = t(&[(1, 0.9)]);
        let out = c.combine(&[(0, &a), (1, &b), (2, &d)]).expect("answer");
        assert_eq!(out.class, 2);
        assert!((out.scores[2] - 2.0 / 3.0).abs() < 1e-12);
        // One vote each for classes 2 and 1: the soft score (1.65 for class 1 vs 0.5) decides.
        let out = c.combine(&[(0, &a), (2, &d)]).expect("answer");
        assert_eq!(out.class, 1);
    }

    #[test]
    fn no_replies_no_answer_and_bad_classes_are_ignored() {
        let c = Combiner::soft_vote(2, 1);
        assert!(c.combine(&[]).is_none());
        let a = t(&[(7, 0.9), (1, 0.1)]);
        assert_eq!(c.combine(&[(0, &a)]).map(|x| x.class), Some(1));
    }
}
