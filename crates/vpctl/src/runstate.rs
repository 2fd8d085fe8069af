//! The state folder of a local ensemble started by `vpctl run`: `run.json` (endpoints and process ids, read by
//! `classify`, `eval` and `bench`), the generated aggregator config, process logs, and hold markers (a variant
//! with a hold marker is not restarted; `eval --kill` uses them to keep a killed variant down).

use crate::CliError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default state folder: `$VP_STATE_DIR`, else `<tmp>/vpctl`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("VP_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("vpctl"))
}

/// One process of the ensemble.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proc {
    pub name: String,
    pub url: String,
    /// `host:port` of its OIP gRPC endpoint (absent in state files of older versions).
    #[serde(default)]
    pub grpc: Option<String>,
    pub pid: Option<u32>,
    pub restarts: u32,
}

/// Contents of `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// PID of the `vpctl run` supervisor.
    pub supervisor_pid: u32,
    pub manifest: PathBuf,
    pub model_name: String,
    pub aggregator: Proc,
    pub variants: Vec<Proc>,
}

impl RunState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("run.json")
    }

    /// Reads `run.json` from `dir`, with a hint when no ensemble is running.
    pub fn read(dir: &Path) -> Result<Self, CliError> {
        let p = Self::path(dir);
        let text = std::fs::read_to_string(&p).map_err(|_| {
            CliError::msg(format!(
                "no running ensemble found ({} is missing): start one with `vpctl run <ensemble.yaml>`, or pass --url",
                p.display()
            ))
        })?;
        serde_json::from_str(&text).map_err(|e| CliError::msg(format!("{}: {e}", p.display())))
    }

    /// Writes `run.json` atomically (write + rename).
    pub fn write(&self, dir: &Path) -> Result<(), CliError> {
        let tmp = dir.join("run.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| CliError::msg(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| CliError::msg(format!("{}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, Self::path(dir))
            .map_err(|e| CliError::msg(format!("{}: {e}", dir.display())))
    }
}

/// Path of the hold marker of a variant.
pub fn hold_path(dir: &Path, variant: &str) -> PathBuf {
    dir.join("hold").join(variant)
}

/// Whether a variant is held down.
pub fn is_held(dir: &Path, variant: &str) -> bool {
    hold_path(dir, variant).exists()
}

/// Places (true) or removes (false) a variant's hold marker.
pub fn set_hold(dir: &Path, variant: &str, hold: bool) -> Result<(), CliError> {
    let p = hold_path(dir, variant);
    let io = |e: std::io::Error| CliError::msg(format!("{}: {e}", p.display()));
    if hold {
        std::fs::create_dir_all(dir.join("hold")).map_err(io)?;
        std::fs::write(&p, b"held by vpctl eval\n").map_err(io)
    } else {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }
}
