//! The ONNX Runtime wrapper on a shipped model: outputs are probability rows, and contract or batch mistakes are
//! reported as errors, not panics.

use std::path::{Path, PathBuf};
use vp_infer::{InferError, Model};

fn family_dir() -> PathBuf {
    let dir = std::env::var_os("VP_FAMILY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fmnist"));
    assert!(
        dir.join("ensemble.yaml").is_file(),
        "no model family at {} (set VP_FAMILY_DIR or add models/fmnist)",
        dir.display()
    );
    dir
}

fn first_model() -> (PathBuf, vp_core::Manifest) {
    let dir = family_dir();
    let text = std::fs::read_to_string(dir.join("ensemble.yaml")).expect("manifest");
    let m = vp_core::Manifest::from_yaml(&text).expect("valid manifest");
    (dir.join(&m.variants[0].file), m)
}

#[test]
fn runs_batches_to_probability_rows() {
    let (path, m) = first_model();
    let mut model =
        Model::load(&path, 1, "image", [1, 28, 28], "probs", m.classes()).expect("load");
    let data: Vec<u8> = (0..3 * 784).map(|i| (i % 251) as u8).collect();
    let probs = model.run(&data, 3).expect("run");
    assert_eq!(probs.len(), 3 * m.classes());
    for row in probs.chunks(m.classes()) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "row sums to {sum}");
        assert!(row.iter().all(|p| (0.0..=1.0).contains(p)));
    }
    // Same sample alone gives the same row as inside the batch.
    let one = model.run(&data[784..1568], 1).expect("run");
    for (a, b) in one.iter().zip(&probs[m.classes()..2 * m.classes()]) {
        assert!((a - b).abs() < 1e-5);
    }
    assert!(matches!(
        model.run(&data[..100], 1),
        Err(InferError::BatchSize { .. })
    ));
    assert!(matches!(
        model.run(&[], 0),
        Err(InferError::BatchSize { .. })
    ));
}

#[test]
fn contract_mismatches_and_bad_files_are_errors() {
    let (path, m) = first_model();
    let e = Model::load(&path, 1, "pixels", [1, 28, 28], "probs", m.classes())
        .err()
        .expect("error");
    assert!(matches!(e, InferError::Contract { .. }), "{e}");
    assert!(e.to_string().contains("\"pixels\""), "{e}");
    let e = Model::load(&path, 1, "image", [1, 28, 28], "logits", m.classes())
        .err()
        .expect("error");
    assert!(matches!(e, InferError::Contract { .. }), "{e}");
    let e = Model::load(
        Path::new("/nonexistent.onnx"),
        1,
        "image",
        [1, 28, 28],
        "probs",
        10,
    )
    .err()
    .expect("error");
    assert!(matches!(e, InferError::Load { .. }), "{e}");
    let junk = std::env::temp_dir().join(format!("vp-infer-junk-{}.onnx", std::process::id()));
    std::fs::write(&junk, b"not an onnx model").expect("write");
    let e = Model::load(&junk, 1, "image", [1, 28, 28], "probs", 10)
        .err()
        .expect("error");
    let _ = std::fs::remove_file(&junk);
    assert!(matches!(e, InferError::Load { .. }), "{e}");
}
