//! The weighted soft vote against the test vector shared with the Python toolchain
//! (`testdata/weighted-vote.json`, also checked by models/vptrain/tests/test_combine.py): the Rust combiner the
//! aggregator uses must pick exactly the classes the toolchain's tables were computed with.

use serde::Deserialize;
use vp_core::{CombineRule, Combiner, TopK, top_k};

#[derive(Deserialize)]
struct Vector {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    note: String,
    classes: usize,
    weights: Vec<f64>,
    k: Option<usize>,
    replies: Vec<Vec<f32>>,
    answering: Vec<usize>,
    expected: usize,
}

#[test]
fn rust_combiner_matches_the_shared_vector() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/weighted-vote.json");
    let text = std::fs::read_to_string(path).expect("test vector");
    let v: Vector = serde_json::from_str(&text).expect("vector json");
    assert!(v.cases.len() >= 40);
    for case in &v.cases {
        let combiner = Combiner::new(CombineRule::SoftVote, case.classes, case.weights.clone());
        let ranked: Vec<TopK> = case
            .answering
            .iter()
            .map(|&i| top_k(&case.replies[i], case.k.unwrap_or(case.classes)))
            .collect();
        let replies: Vec<(usize, &TopK)> =
            case.answering.iter().copied().zip(ranked.iter()).collect();
        let got = combiner.combine(&replies).map(|c| c.class);
        assert_eq!(got, Some(case.expected), "{}", case.note);
        // The same replies with unit weights: the vector's first case exists to show the weights decide.
        if case.note.starts_with("plain vote would pick class 0") {
            let plain = Combiner::soft_vote(case.classes, case.weights.len());
            assert_eq!(plain.combine(&replies).map(|c| c.class), Some(0));
        }
    }
}
