//! One control plane per test binary, shared by its tests.

use std::path::PathBuf;

use tokio::sync::OnceCell;

use crate::{ControlPlane, Error, StartOptions};

/// Environment variable naming the data directory of an already running control plane (from
/// `scripts/controlplane.sh up`) that [`ControlPlane::shared`] attaches to instead of starting its own.
pub const DATA_DIR_ENV: &str = "VP_TESTENV_DATA_DIR";

/// The shared control plane, or why it could not be started (kept, so later tests fail fast with the reason
/// rather than each waiting for a start that cannot work).
static SHARED: OnceCell<Result<ControlPlane, String>> = OnceCell::const_new();

impl ControlPlane {
    /// The control plane shared by all tests of this test binary, started (with default options and no nodes)
    /// by the first caller. It stops when the test binary exits. Tests must isolate themselves: a namespace from
    /// [`ControlPlane::namespace`], node names from [`crate::unique_name`].
    pub async fn shared() -> Result<&'static ControlPlane, Error> {
        let cell = SHARED
            .get_or_init(|| async {
                let attach = std::env::var(DATA_DIR_ENV).ok().filter(|d| !d.is_empty());
                let result = match attach {
                    Some(dir) => ControlPlane::attach(&PathBuf::from(dir)),
                    None => ControlPlane::start(StartOptions::default()).await,
                };
                result.map_err(|e| e.to_string())
            })
            .await;
        cell.as_ref().map_err(|e| Error::Shared(e.clone()))
    }
}
