//! Start-up: reads the manifest, reads the model file once into memory (refusing one larger than the manifest
//! says), verifies those bytes' sha256 against the manifest and loads the same bytes into ONNX Runtime, so the
//! file cannot be swapped between the check and the load.

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
    #[error(
        "{path}: the file is larger than the {expected} bytes the manifest says; refusing to read it"
    )]
    Size { path: PathBuf, expected: u64 },
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

/// Reads a model file into memory, at most `max` bytes (one more byte is an error).
pub fn read_model(path: &Path, max: u64) -> Result<Vec<u8>, LoadError> {
    let f = std::fs::File::open(path).map_err(|e| LoadError::Read(path.to_path_buf(), e))?;
    let mut bytes = Vec::new();
    f.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| LoadError::Read(path.to_path_buf(), e))?;
    if bytes.len() as u64 > max {
        return Err(LoadError::Size {
            path: path.to_path_buf(),
            expected: max,
        });
    }
    Ok(bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
    let bytes = read_model(&path, entry.bytes)?;
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(&entry.sha256) {
        return Err(LoadError::Checksum {
            path,
            expected: entry.sha256.clone(),
            actual,
        });
    }
    let s = &manifest.input.shape;
    let model = Model::from_bytes(
        &path,
        &bytes,
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
