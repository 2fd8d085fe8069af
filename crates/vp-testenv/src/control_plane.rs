//! Starting, using and stopping one `vp-controlplane` process.
//!
//! The process runs in its own process group with its standard input on a pipe from the test: it stops when
//! the pipe closes, which happens when the [`ControlPlane`] is dropped or the test process exits in any way
//! (panic, abort, kill). So no test can leave a control plane running behind it.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{Error, State, binary_path, state};

/// How long a start may take before it is abandoned (a cold start on a loaded 2-core machine takes ~20 s).
const START_TIMEOUT: Duration = Duration::from_secs(240);
/// How long a stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Logs older than this are removed when a new control plane starts.
const LOG_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Options for a private control plane ([`ControlPlane::start`]).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Simulated nodes registered at start, named `edge-0`, `edge-1`, ... (default 0).
    pub nodes: usize,
    /// Extra kube-apiserver flags, e.g. `--feature-gates=...`; they override the defaults.
    pub apiserver_args: Vec<String>,
    /// Extra kube-controller-manager flags, e.g. `--node-monitor-grace-period=20s`.
    pub controller_manager_args: Vec<String>,
    /// Extra kube-scheduler flags.
    pub scheduler_args: Vec<String>,
}

/// A running test control plane: either a process this value owns (stopped on drop) or one started elsewhere
/// and attached to (left running).
#[derive(Debug)]
pub struct ControlPlane {
    state: State,
    log: PathBuf,
    process: Option<Mutex<Owned>>,
}

#[derive(Debug)]
struct Owned {
    child: Child,
    stdin: Option<ChildStdin>,
    data: PathBuf,
}

impl ControlPlane {
    /// Starts a private control plane and waits until it is ready: API server serving, controllers and
    /// scheduler running, the requested nodes Ready and schedulable.
    pub async fn start(opts: StartOptions) -> Result<ControlPlane, Error> {
        let bin = binary_path()?;
        let (data, log) = new_run_dirs()?;
        let log_file =
            File::create(&log).map_err(|e| Error::io(format!("create {}", log.display()), e))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| Error::io("duplicate log handle", e))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("up")
            .arg("--data-dir")
            .arg(&data)
            .arg(format!("--nodes={}", opts.nodes))
            .arg("--stop-on-stdin-close")
            // The process deletes its data itself, so a control plane that outlives its ControlPlane value (the
            // shared one, stopped by the test process exiting) leaves nothing behind either.
            .arg("--remove-data-dir");
        for (flag, args) in [
            ("--apiserver-arg", &opts.apiserver_args),
            ("--controller-manager-arg", &opts.controller_manager_args),
            ("--scheduler-arg", &opts.scheduler_args),
        ] {
            for a in args {
                cmd.arg(format!("{flag}={a}"));
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(log_file)
            .stderr(log_err)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("start {}", bin.display()), e))?;
        let stdin = child.stdin.take();
        let owned = Owned {
            child,
            stdin,
            data: data.clone(),
        };
        let mut cp = ControlPlane {
            state: state_before_ready(&data),
            log,
            process: Some(Mutex::new(owned)),
        };
        cp.state = cp.wait_ready(&data).await?;
        Ok(cp)
    }

    /// Attaches to a control plane started elsewhere (e.g. `scripts/controlplane.sh up`) by its data directory.
    /// It is left running when the value is dropped.
    pub fn attach(data_dir: &Path) -> Result<ControlPlane, Error> {
        match state::read(data_dir)? {
            Some(state) => Ok(ControlPlane {
                log: data_dir.join("controlplane.log"),
                state,
                process: None,
            }),
            None => Err(Error::State {
                path: state::path(data_dir),
                message: "no ready control plane there (start one with scripts/controlplane.sh up)"
                    .into(),
            }),
        }
    }

    async fn wait_ready(&self, data: &Path) -> Result<State, Error> {
        let began = Instant::now();
        loop {
            if let Some(state) = state::read(data)? {
                return Ok(state);
            }
            if let Some(status) = self.exit_status() {
                return Err(Error::Exited {
                    status,
                    log: self.log.clone(),
                    tail: log_tail(&self.log),
                });
            }
            if began.elapsed() > START_TIMEOUT {
                return Err(Error::StartTimeout {
                    seconds: START_TIMEOUT.as_secs(),
                    log: self.log.clone(),
                    tail: log_tail(&self.log),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn exit_status(&self) -> Option<String> {
        let process = self.process.as_ref()?;
        let mut owned = process.lock().unwrap_or_else(|p| p.into_inner());
        match owned.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown: {e}")),
        }
    }

    /// What the control plane published about itself (URLs, kubeconfig, start time).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The admin kubeconfig (usable with kubectl and helm: `KUBECONFIG=...`).
    pub fn kubeconfig(&self) -> &Path {
        &self.state.kubeconfig
    }

    /// The control plane's log (all components and the node simulator).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// A client with admin rights (group `system:masters`), bound to the caller's tokio runtime.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        let path = self.kubeconfig();
        let bad = |message: String| Error::Kubeconfig {
            path: path.to_path_buf(),
            message,
        };
        let kc = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| bad(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| bad(e.to_string()))
    }

    /// A client authenticated as a service account (with a fresh token from the TokenRequest API), so that a
    /// test sees exactly what that account's RBAC allows.
    pub async fn client_for_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Client, Error> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let admin = self.client().await?;
        let sas: kube::Api<ServiceAccount> = kube::Api::namespaced(admin, namespace);
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let what = format!("request a token for service account {namespace}/{name}");
        let token = sas
            .create_token_request(name, &Default::default(), &req)
            .await
            .map_err(|e| Error::kube(what.clone(), e))?
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| Error::Invalid(format!("{what}: reply without a token")))?;
        let path = self.kubeconfig();
        let bad = |message: String| Error::Kubeconfig {
            path: path.to_path_buf(),
            message,
        };
        let kc = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| bad(e.to_string()))?;
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        config.default_namespace = namespace.to_string();
        kube::Client::try_from(config).map_err(|e| bad(e.to_string()))
    }

    /// Stops the control plane now (as dropping it does) and waits for the process to exit.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let Some(process) = self.process.take() else {
            return;
        };
        let mut owned = process.into_inner().unwrap_or_else(|p| p.into_inner());
        // Closing stdin asks the control plane to stop cleanly.
        drop(owned.stdin.take());
        let began = Instant::now();
        while began.elapsed() < STOP_TIMEOUT {
            match owned.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        if matches!(owned.child.try_wait(), Ok(None)) {
            let _ = owned.child.kill();
            let _ = owned.child.wait();
        }
        // Normally already gone (the process deletes it); not if the process had to be killed.
        let _ = std::fs::remove_dir_all(&owned.data);
    }
}

/// Picks `$TMPDIR/vp-testenv/run-<pid>-<n>` for the data (created by the control plane, which deletes it when
/// it stops) and the log path beside it, pruning old logs.
fn new_run_dirs() -> Result<(PathBuf, PathBuf), Error> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let root = std::env::temp_dir().join("vp-testenv");
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::io(format!("create {}", root.display()), e))?;
    prune_old_logs(&root);
    let id = format!(
        "{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let data = root.join(format!("run-{id}"));
    // A leftover of an earlier process with the same pid (its control plane was killed) is stale.
    let _ = std::fs::remove_dir_all(&data);
    Ok((data, root.join(format!("controlplane-{id}.log"))))
}

/// Removes logs older than a day, and data directories older than a day whose control plane was killed
/// before it could delete them.
fn prune_old_logs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let age = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        if age < LOG_RETENTION {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") {
            let _ = std::fs::remove_file(e.path());
        } else if name.starts_with("run-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The last 40 lines of a log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The state known before the control plane reports ready (paths only); replaced by the real one once it is.
fn state_before_ready(data: &Path) -> State {
    State {
        pid: 0,
        server: String::new(),
        kubeconfig: data.join("kubeconfig"),
        simulator: String::new(),
        data_dir: data.to_path_buf(),
        start_seconds: 0.0,
    }
}
