//! A pausable TCP proxy on loopback between a client under test (the operator) and the API server, to test
//! what a client does when its connection to the control plane freezes or breaks while the cluster itself goes
//! on.
//!
//! It forwards bytes both ways without looking at them (TLS passes through, and the API server's certificate is
//! issued for 127.0.0.1, so a kubeconfig pointing at the proxy works unchanged). [`Proxy::freeze`] stops
//! forwarding in both directions (open connections stay open, new ones are accepted but get nothing: a network
//! that drops every packet); [`Proxy::thaw`] resumes, delivering what was held back; [`Proxy::cut`] closes every
//! open connection and drops what they held back (a partition long enough for TCP to give up). Dropping the
//! proxy closes it and every connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{ControlPlane, Error};

/// A running proxy; see the module docs.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    /// Bumped by every cut; connections close when it changes (or when the proxy is dropped).
    epoch: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Proxy, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("bind the proxy", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("proxy address", e))?;
        let (frozen, _) = watch::channel(false);
        let (epoch, _) = watch::channel(0u64);
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            frozen.subscribe(),
            epoch.subscribe(),
        ));
        Ok(Proxy {
            addr,
            frozen,
            epoch,
            accept,
        })
    }

    /// Starts a proxy in front of this control plane's API server.
    pub async fn for_api_server(cp: &ControlPlane) -> Result<Proxy, Error> {
        Proxy::start(api_server_addr(&cp.state().server)?).await
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding (both ways, every connection, new ones too).
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Resumes forwarding, delivering what was held back.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Closes every open connection now; what they held back is lost. New connections work as before (or stay
    /// frozen, if the proxy is frozen).
    pub fn cut(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// The control plane's admin kubeconfig, pointing at this proxy.
    fn kubeconfig(&self, cp: &ControlPlane) -> Result<Kubeconfig, Error> {
        let source = cp.kubeconfig();
        let mut kc = Kubeconfig::read_from(source).map_err(|e| Error::Kubeconfig {
            path: source.to_path_buf(),
            message: e.to_string(),
        })?;
        for c in &mut kc.clusters {
            if let Some(cluster) = c.cluster.as_mut() {
                cluster.server = Some(format!("https://{}", self.addr));
            }
        }
        Ok(kc)
    }

    /// Writes a copy of the control plane's admin kubeconfig that points at this proxy to `path`.
    pub fn write_kubeconfig(&self, cp: &ControlPlane, path: &Path) -> Result<PathBuf, Error> {
        let kc = self.kubeconfig(cp)?;
        // JSON is YAML: clients read it as a kubeconfig.
        let text = serde_json::to_string_pretty(&kc).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        Ok(path.to_path_buf())
    }

    /// An admin client whose every request goes through this proxy.
    pub async fn client(&self, cp: &ControlPlane) -> Result<kube::Client, Error> {
        let bad = |message: String| Error::Kubeconfig {
            path: cp.kubeconfig().to_path_buf(),
            message,
        };
        let config = kube::Config::from_custom_kubeconfig(
            self.kubeconfig(cp)?,
            &KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| bad(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| bad(e.to_string()))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Connections see the epoch sender go away and close.
    }
}

/// `host:port` of an `https://host:port` API server URL.
fn api_server_addr(server: &str) -> Result<SocketAddr, Error> {
    server
        .strip_prefix("https://")
        .map(|s| s.trim_end_matches('/'))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Invalid(format!("API server URL {server:?} is not https://IP:PORT")))
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    frozen: watch::Receiver<bool>,
    epoch: watch::Receiver<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let (frozen, mut epoch) = (frozen.clone(), epoch.clone());
        epoch.mark_unchanged();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let mut cut = epoch.clone();
            tokio::select! {
                () = pump(cr, sw, frozen.clone()) => {}
                () = pump(sr, cw, frozen) => {}
                _ = cut.changed() => {}
            }
            // Dropping both halves of both sockets closes the connection either way.
        });
    }
}

/// Copies bytes from `from` to `to` while not frozen; returns at end of stream or on an error.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read just as the proxy froze are held back until it thaws.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_server_urls() {
        assert_eq!(
            api_server_addr("https://127.0.0.1:6443").expect("addr"),
            "127.0.0.1:6443".parse().expect("addr")
        );
        assert!(api_server_addr("http://127.0.0.1:1").is_err());
        assert!(api_server_addr("https://localhost:1").is_err());
    }

    #[tokio::test]
    async fn freezes_thaws_and_cuts() {
        // An echo server upstream.
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(upstream).await.expect("proxy");
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        let mut buf = [0u8; 5];
        c.write_all(b"hello").await.expect("write");
        c.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"hello");

        proxy.freeze();
        c.write_all(b"world").await.expect("write");
        let held =
            tokio::time::timeout(std::time::Duration::from_millis(300), c.read(&mut buf)).await;
        assert!(held.is_err(), "nothing passes while frozen");
        proxy.thaw();
        c.read_exact(&mut buf)
            .await
            .expect("delivered after the thaw");
        assert_eq!(&buf, b"world");

        proxy.freeze();
        c.write_all(b"lost!").await.expect("write");
        proxy.cut();
        proxy.thaw();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("closed, not hanging");
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "the cut connection is closed: {n:?}"
        );
        let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
        again.write_all(b"again").await.expect("write");
        again
            .read_exact(&mut buf)
            .await
            .expect("new connections work");
        assert_eq!(&buf, b"again");
    }
}
