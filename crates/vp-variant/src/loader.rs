//! Start-up: reads the manifest, verifies the model file's sha256 against it, and loads it into ONNX Runtime.

use crate::Args;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;
use vp_core::{Manifest, ManifestError, ModelEntry};
use vp_infer::{InferError, Model};

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Manifest(PathBuf, ManifestError),
    #[error("model {0:?} is not in family {1:?} (it has: {2})")]
    UnknownModel(String, String, String),
    #[error(
        "{path}: sha256 is {actual}, but the manifest says {expected}; refusing to serve a different model"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error("invalid flag: {0}")]
    Flag(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// A verified, loaded model with its manifest.
pub struct Loaded {
    pub manifest: Manifest,
    pub entry: ModelEntry,
    pub model: Model,
}

/// Streams a file through SHA-256 and returns the lowercase hex digest.
pub fn sha256_file(path: &Path) -> Result<String, std::io::Error> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads and validates the manifest at `path`.
pub fn read_manifest(path: &Path) -> Result<Manifest, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Read(path.to_path_buf(), e))?;
    Manifest::from_yaml(&text).map_err(|e| LoadError::Manifest(path.to_path_buf(), e))
}

pub fn load(args: &Args) -> Result<Loaded, LoadError> {
    vp_infer::check_runtime()?;
    let manifest = read_manifest(&args.manifest)?;
    let entry = manifest.model(&args.variant).cloned().ok_or_else(|| {
        let names: Vec<&str> = manifest
            .variants
            .iter()
            .chain(std::iter::once(&manifest.baseline))
            .map(|v| v.name.as_str())
            .collect();
        LoadError::UnknownModel(
            args.variant.clone(),
            manifest.family.clone(),
            names.join(", "),
        )
    })?;
    vp_core::validate_k(args.default_k, manifest.classes())
        .map_err(|e| LoadError::Flag(format!("--default-k: {e}")))?;
    if args.max_batch == 0 {
        return Err(LoadError::Flag("--max-batch must be at least 1".into()));
    }
    let path = args
        .manifest
        .parent()
        .unwrap_or(Path::new("."))
        .join(&entry.file);
    let actual = sha256_file(&path).map_err(|e| LoadError::Read(path.clone(), e))?;
    if !actual.eq_ignore_ascii_case(&entry.sha256) {
        return Err(LoadError::Checksum {
            path,
            expected: entry.sha256.clone(),
            actual,
        });
    }
    let s = &manifest.input.shape;
    let model = Model::load(
        &path,
        args.threads,
        &manifest.input.name,
        [s[0], s[1], s[2]],
        &manifest.output.name,
        manifest.classes(),
    )?;
    tracing::info!(model = %entry.name, path = %path.display(), sha256 = %actual, "model verified and loaded");
    Ok(Loaded {
        manifest,
        entry,
        model,
    })
}
