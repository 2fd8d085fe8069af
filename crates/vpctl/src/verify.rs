//! `vpctl verify`: re-measures a family's accuracy tables with bare ONNX Runtime in Rust (each model, every
//! subset of variants with full and top-k soft votes) and compares them with the manifest, so the numbers the
//! aggregator reports as expected accuracy are known to hold for the shipped files.

use crate::CliError;
use crate::testset::{TestSet, cache_dir, default_dir_for};
use std::path::{Path, PathBuf};
use vp_core::{CombineRule, Combiner, Manifest, TopK, top_k};
use vp_infer::Model;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The family's ensemble.yaml.
    pub manifest: PathBuf,
    /// Folder with t10k-images-idx3-ubyte.gz (or -idx4-) and t10k-labels-idx1-ubyte.gz. Default: the manifest's
    /// `dataset.test_split` folder (image-folder and MNIST families ship their test split), for `cifar10-npm` the
    /// copy scripts/setup-cifar10-npm.sh writes into $VP_CACHE, else Fashion-MNIST's.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Samples per ONNX Runtime run.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Largest accepted difference, as a fraction of the test samples (0 = every accuracy exactly as in the
    /// manifest, i.e. the same number of correct answers).
    #[arg(long, default_value_t = 0.0)]
    pub tolerance: f64,
}

/// Loads a manifest file.
pub fn read_manifest(path: &Path) -> Result<Manifest, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::msg(format!("{}: {e}", path.display())))?;
    Manifest::from_yaml(&text).map_err(|e| CliError::msg(format!("{}: {e}", path.display())))
}

/// Runs one model over the whole set and returns `n * classes` probabilities.
pub fn probabilities(
    m: &Manifest,
    dir: &Path,
    name: &str,
    set: &TestSet,
    batch: usize,
    threads: usize,
) -> Result<Vec<f32>, CliError> {
    let entry = m
        .model(name)
        .ok_or_else(|| CliError::msg(format!("no model {name}")))?;
    let s = &m.input.shape;
    let mut model = Model::load(
        &dir.join(&entry.file),
        threads,
        &m.input.name,
        [s[0], s[1], s[2]],
        &m.output.name,
        m.classes(),
    )
    .map_err(|e| CliError::msg(e.to_string()))?;
    let sample = s.iter().product::<usize>();
    let mut out = Vec::with_capacity(set.len() * m.classes());
    for start in (0..set.len()).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(set.len());
        let data = &set.images[start * sample..end * sample];
        out.extend(
            model
                .run(data, end - start)
                .map_err(|e| CliError::msg(e.to_string()))?,
        );
    }
    Ok(out)
}

fn accuracy(pred: impl Iterator<Item = usize>, labels: &[u8]) -> f64 {
    let correct = pred
        .zip(labels)
        .filter(|(p, l)| *p == usize::from(**l))
        .count();
    correct as f64 / labels.len().max(1) as f64
}

/// Accuracy of the soft vote over `members` (family indices), each sending its top-`k` rows, weighted by the
/// manifest's vote weights (the combiner the aggregator builds from the same manifest).
fn vote_accuracy(
    ranked: &[Vec<TopK>],
    members: &[usize],
    k: usize,
    combiner: &Combiner,
    labels: &[u8],
) -> f64 {
    let pred = (0..labels.len()).map(|i| {
        let cut: Vec<TopK> = members
            .iter()
            .map(|&v| TopK {
                entries: ranked[v][i].entries[..k.min(ranked[v][i].entries.len())].to_vec(),
            })
            .collect();
        let replies: Vec<(usize, &TopK)> = members.iter().copied().zip(cut.iter()).collect();
        combiner
            .combine(&replies)
            .map(|c| c.class)
            .unwrap_or(usize::MAX)
    });
    accuracy(pred, labels)
}

struct Check {
    what: String,
    manifest: f64,
    measured: f64,
}

pub async fn verify(a: VerifyArgs) -> Result<(), CliError> {
    let m = read_manifest(&a.manifest)?;
    let dir = a.manifest.parent().unwrap_or(Path::new(".")).to_path_buf();
    let data_dir = a.data_dir.clone().unwrap_or_else(|| {
        default_dir_for(
            &m.dataset.name,
            m.dataset.test_split.as_deref(),
            &dir,
            &cache_dir(),
        )
    });
    let set = TestSet::load(&data_dir)?;
    if set.sample_len() != m.input.shape.iter().product::<usize>() {
        return Err(CliError::msg(format!(
            "{}: samples are {}x{}x{}, the models take {:?}",
            data_dir.display(),
            set.channels,
            set.rows,
            set.cols,
            m.input.shape
        )));
    }
    if set.len() as u64 != m.dataset.test_samples {
        return Err(CliError::msg(format!(
            "the manifest was measured on {} test samples, the data set has {}",
            m.dataset.test_samples,
            set.len()
        )));
    }
    let classes = m.classes();
    let mut checks = Vec::new();
    let mut ranked: Vec<Vec<TopK>> = Vec::new();
    let names: Vec<String> = m
        .variants
        .iter()
        .chain(std::iter::once(&m.baseline))
        .map(|v| v.name.clone())
        .collect();
    for (idx, name) in names.iter().enumerate() {
        let (set_ref, m_ref, dir_ref, batch, threads, name_c) =
            (&set, &m, &dir, a.batch, a.threads, name.clone());
        let probs = tokio::task::block_in_place(|| {
            probabilities(m_ref, dir_ref, &name_c, set_ref, batch, threads)
        })?;
        let rows: Vec<TopK> = probs.chunks(classes).map(|r| top_k(r, classes)).collect();
        let acc = accuracy(rows.iter().map(|r| r.entries[0].0), &set.labels);
        let entry = m
            .model(name)
            .ok_or_else(|| CliError::msg(format!("no model {name}")))?;
        checks.push(Check {
            what: format!("model {name}"),
            manifest: entry.accuracy,
            measured: acc,
        });
        if idx < m.variants.len() {
            ranked.push(rows);
        }
    }
    let combiner = Combiner::new(CombineRule::SoftVote, classes, m.vote_weights());
    for row in &m.subsets {
        let members: Vec<usize> = row
            .variants
            .iter()
            .filter_map(|v| m.variant_index(v))
            .collect();
        let label = row.variants.join(",");
        checks.push(Check {
            what: format!("subset {label} full"),
            manifest: row.accuracy,
            measured: vote_accuracy(&ranked, &members, classes, &combiner, &set.labels),
        });
        for (i, want) in row.topk_accuracy.iter().enumerate() {
            checks.push(Check {
                what: format!("subset {label} top-{}", i + 1),
                manifest: *want,
                measured: vote_accuracy(&ranked, &members, i + 1, &combiner, &set.labels),
            });
        }
    }
    let all: Vec<usize> = (0..m.variants.len()).collect();
    for row in &m.topk {
        checks.push(Check {
            what: format!("ensemble top-{}", row.k),
            manifest: row.accuracy,
            measured: vote_accuracy(&ranked, &all, row.k, &combiner, &set.labels),
        });
    }
    let mut bad = 0;
    println!(
        "{:<52} {:>9} {:>9} {:>8}",
        "check", "manifest", "rust", "diff pp"
    );
    for c in &checks {
        let diff = c.measured - c.manifest;
        // The manifest rounds accuracies to 6 decimals: compare as counts of correctly answered samples.
        let n = set.len() as f64;
        let ok = ((c.measured * n).round() - (c.manifest * n).round()).abs()
            <= (a.tolerance * n).round();
        if !ok {
            bad += 1;
        }
        if !ok
            || c.what.starts_with("model")
            || c.what.contains("full") && c.what.matches(',').count() + 1 == m.variants.len()
        {
            println!(
                "{:<52} {:>8.2}% {:>8.2}% {:>+8.3}{}",
                c.what,
                c.manifest * 100.0,
                c.measured * 100.0,
                diff * 100.0,
                if ok { "" } else { "  MISMATCH" }
            );
        }
    }
    println!(
        "{} checks ({} models, {} subsets x (full + top-1..{})), {bad} outside {} points",
        checks.len(),
        names.len(),
        m.subsets.len(),
        classes / 2,
        a.tolerance * 100.0
    );
    if bad > 0 {
        return Err(CliError::msg(format!(
            "{bad} accuracy checks differ from the manifest"
        )));
    }
    Ok(())
}
