//! The state file (`state.json`) that a ready control plane writes into its data directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

/// What a running control plane publishes about itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Process id of the control plane.
    pub pid: u32,
    /// API server URL (`https://127.0.0.1:PORT`).
    pub server: String,
    /// Admin kubeconfig (client certificate in group `system:masters`).
    pub kubeconfig: PathBuf,
    /// Node simulator control API (`http://127.0.0.1:PORT`).
    pub simulator: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Seconds from process start to ready.
    pub start_seconds: f64,
}

/// The state file's path inside a data directory.
pub(crate) fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("state.json")
}

/// Reads the state of the control plane in `data_dir`; `Ok(None)` while it is not (yet) ready.
pub(crate) fn read(data_dir: &Path) -> Result<Option<State>, Error> {
    let path = path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::State {
                path,
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::State {
            path,
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_go_side_format() {
        let s: State = serde_json::from_str(
            r#"{"pid":7,"server":"https://127.0.0.1:1","kubeconfig":"/d/kubeconfig",
                "simulator":"http://127.0.0.1:2","dataDir":"/d","startSeconds":9.5}"#,
        )
        .expect("valid state");
        assert_eq!(s.pid, 7);
        assert_eq!(s.simulator, "http://127.0.0.1:2");
        assert_eq!(s.data_dir, PathBuf::from("/d"));
    }

    #[test]
    fn missing_file_is_not_ready_and_garbage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("vp-testenv-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        assert!(read(&dir).expect("no error").is_none());
        std::fs::write(path(&dir), b"{not json").expect("write");
        let err = read(&dir).expect_err("garbage");
        assert!(err.to_string().contains("state.json"), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
