//! A minimal HTTP/1.1 client for the node simulator's loopback control API: one request per connection, JSON
//! bodies. Opening a fresh connection per call keeps it independent of any one tokio runtime, which matters
//! because the shared control plane outlives the runtime of the test that started it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;

/// Longest a simulator call may take (it makes a few API calls itself).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest reply accepted.
const MAX_REPLY: u64 = 4 << 20;

/// A reply: status code and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: String,
}

/// Sends `method path` with an optional JSON body to `base` (`http://127.0.0.1:PORT`).
pub(crate) async fn call(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Reply, Error> {
    let addr = base
        .strip_prefix("http://")
        .ok_or_else(|| Error::Simulator(format!("unsupported simulator URL {base:?}")))?;
    let request = build_request(method, addr, path, body);
    let io = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.take(MAX_REPLY).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(CALL_TIMEOUT, io)
        .await
        .map_err(|_| {
            Error::Simulator(format!(
                "{method} {base}{path}: no reply within {CALL_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| Error::Simulator(format!("{method} {base}{path}: {e}")))?;
    parse_reply(&raw).map_err(|m| Error::Simulator(format!("{method} {base}{path}: {m}")))
}

fn build_request(method: &str, host: &str, path: &str, body: Option<&str>) -> String {
    let body = body.unwrap_or("");
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Parses a complete HTTP/1.1 reply (the server closed the connection). Chunked bodies are decoded.
fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("truncated reply (no header end)")?;
    let mut lines = head.lines();
    let status_line = lines.next().ok_or("empty reply")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok(Reply { status, body })
}

fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("truncated chunk header")?;
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| format!("bad chunk size {size:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after.get(..size).ok_or("truncated chunk")?;
        out.push_str(chunk);
        rest = after
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or("chunk without CRLF")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_length_and_close() {
        let r = build_request("POST", "127.0.0.1:9", "/nodes", Some("{}"));
        assert!(r.starts_with("POST /nodes HTTP/1.1\r\n"));
        assert!(r.contains("Content-Length: 2\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\n{}"));
    }

    #[test]
    fn parses_plain_and_chunked_replies() {
        let r = parse_reply(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}").expect("plain");
        assert_eq!((r.status, r.body.as_str()), (201, "{}"));
        let r = parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .expect("chunked");
        assert_eq!((r.status, r.body.as_str()), (200, "abcde"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_reply(b"").is_err());
        assert!(parse_reply(b"HTTP/1.1 OK\r\n\r\n").is_err());
        assert!(
            parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(
            parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab").is_err()
        );
    }
}
