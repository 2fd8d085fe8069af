//! Top-k replies: what a variant sends back for one sample (its k most likely classes with probabilities), and
//! the rule for the valid range of k (1 <= k <= classes/2, so a reply is never the full distribution).

use thiserror::Error;

/// The k most likely classes of one sample, most likely first, with their probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// `(class index, probability)`, sorted by probability descending, ties by lower class index.
    pub entries: Vec<(usize, f32)>,
}

/// k outside `1..=classes/2`.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("k must be between 1 and {max} (classes/2 for {classes} classes), got {k}")]
pub struct KError {
    pub k: i64,
    pub max: usize,
    pub classes: usize,
}

/// Checks `1 <= k <= classes/2` and returns k as a usize.
pub fn validate_k(k: i64, classes: usize) -> Result<usize, KError> {
    let max = classes / 2;
    match usize::try_from(k) {
        Ok(v) if v >= 1 && v <= max => Ok(v),
        _ => Err(KError { k, max, classes }),
    }
}

/// Picks the top-k of one probability row (k is clamped to the row length).
pub fn top_k(probs: &[f32], k: usize) -> TopK {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    // Descending probability; NaN sorts last; equal probabilities keep the lower class first (stable sort).
    idx.sort_by(|&a, &b| {
        probs[b]
            .partial_cmp(&probs[a])
            .unwrap_or_else(|| probs[a].is_nan().cmp(&probs[b].is_nan()))
    });
    idx.truncate(k.min(probs.len()));
    TopK {
        entries: idx.into_iter().map(|c| (c, probs[c])).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_highest_first_and_breaks_ties_by_lower_class() {
        let t = top_k(&[0.1, 0.3, 0.3, 0.05, 0.25], 3);
        assert_eq!(t.entries, vec![(1, 0.3), (2, 0.3), (4, 0.25)]);
    }

    #[test]
    fn k_larger_than_row_is_clamped() {
        assert_eq!(top_k(&[0.4, 0.6], 5).entries, vec![(1, 0.6), (0, 0.4)]);
    }

    #[test]
    fn nan_never_wins() {
        let t = top_k(&[f32::NAN, 0.2, 0.8], 2);
        assert_eq!(t.entries, vec![(2, 0.8), (1, 0.2)]);
    }

    #[test]
    fn k_range_is_one_to_half_the_classes() {
        assert_eq!(validate_k(1, 10), Ok(1));
        assert_eq!(validate_k(5, 10), Ok(5));
        assert!(validate_k(0, 10).is_err());
        assert!(validate_k(6, 10).is_err());
        assert!(validate_k(-1, 10).is_err());
        let e = validate_k(6, 10).expect_err("should fail").to_string();
        assert!(e.contains("between 1 and 5"), "{e}");
    }
}
