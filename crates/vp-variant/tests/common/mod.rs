//! Helpers shared by the variant server's integration tests: the family under test, the server as a process,
//! and tiny blocking HTTP helpers over std sockets.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The family under test: $VP_FAMILY_DIR, default <repo>/models/fmnist.
pub fn family_dir() -> PathBuf {
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

/// A free loopback port below the ephemeral range (`vp_server::ports`): a port found by binding port 0 can be
/// taken by any client's outgoing connection before the server binds it.
pub fn free_port() -> u16 {
    vp_server::ports::free_port().expect("free port")
}

/// A vp-variant process, killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(manifest: &Path, variant: &str) -> Server {
    start_with(manifest, variant, &["--max-batch", "16"])
}

/// Starts a variant server with extra flags and waits until it is ready.
pub fn start_with(manifest: &Path, variant: &str, flags: &[&str]) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_vp-variant"))
        .args([
            "--manifest",
            &manifest.display().to_string(),
            "--variant",
            variant,
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vp-variant");
    let s = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        port,
    };
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if http::blocking_get(&format!("{}/v2/health/ready", s.base)) == Ok(200) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("vp-variant did not become ready");
}

/// Tiny blocking HTTP helpers over std sockets (no async runtime needed in these tests).
pub mod http {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// Sends a raw HTTP/1.1 request and returns (status, body).
    pub fn raw(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).expect("write head");
        let _ = s.write_all(body);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        parse(&out)
    }

    /// Sends a request with extra header lines ("Name: value") and returns (status, head, body bytes).
    pub fn raw_bytes(
        port: u16,
        method: &str,
        path: &str,
        headers: &[String],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).expect("write head");
        let _ = s.write_all(body);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(out.len());
        let head = String::from_utf8_lossy(&out[..split]).to_string();
        let body = out.get(split + 4..).unwrap_or_default().to_vec();
        (parse(&out).0, head, body)
    }

    pub fn parse(out: &[u8]) -> (u16, String) {
        let text = String::from_utf8_lossy(out).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    pub fn blocking_get(url: &str) -> Result<u16, ()> {
        let rest = url.strip_prefix("http://127.0.0.1:").ok_or(())?;
        let (port, path) = rest.split_once('/').ok_or(())?;
        let port: u16 = port.parse().map_err(|_| ())?;
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|_| ())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|_| ())?;
        s.write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(|_| ())?;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        Ok(parse(&out).0)
    }
}
