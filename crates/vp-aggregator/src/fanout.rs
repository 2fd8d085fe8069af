//! Fan-out: sends one validated batch to every live variant concurrently and collects the top-k replies that
//! arrive before the deadline. A variant that refuses or errors is marked down at once (the prober brings it
//! back); a slow one misses this answer, and one that times out or errors repeatedly is ejected
//! ([`crate::outlier`]). Replies are read up to the size a top-k reply can need, no further.

use crate::metrics::Metrics;
use crate::state::{Endpoint, Live, Snapshot};
use std::time::Duration;
use tokio::time::Instant;
use vp_core::oip::{InferResponse, encode_outgoing, parse_topk_response};
use vp_core::{ImageBatch, TopK};

/// How long an idle pooled connection to a variant is kept: shorter than the 5 s after which a variant closes an
/// idle keep-alive connection (its `--header-read-timeout-ms`, which also times the wait for the next request
/// head), so the aggregator drops a connection before the variant does instead of racing its close.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// The HTTP client used for variant calls and probes (keep-alive pool, no proxies: variants are on the local
/// network or loopback).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(POOL_IDLE)
        .connect_timeout(Duration::from_secs(2))
        .build()
}

/// What one variant contributed to one request.
#[derive(Debug)]
pub enum Outcome {
    Ok(Vec<TopK>),
    Timeout,
    Error(String),
}

/// Result of a fan-out: per asked variant, its family index, name and outcome.
pub struct FanOut {
    pub replies: Vec<(usize, String, Outcome)>,
}

impl FanOut {
    /// Family index and rows of the variants that answered.
    pub fn answered(&self) -> Vec<(usize, &Vec<TopK>)> {
        self.replies
            .iter()
            .filter_map(|(i, _, o)| match o {
                Outcome::Ok(rows) => Some((*i, rows)),
                _ => None,
            })
            .collect()
    }

    /// A one-line account of the variants that did not answer.
    pub fn failures(&self) -> String {
        let parts: Vec<String> = self
            .replies
            .iter()
            .filter_map(|(_, n, o)| match o {
                Outcome::Ok(_) => None,
                Outcome::Timeout => Some(format!("{n}: no reply before the deadline")),
                Outcome::Error(e) => Some(format!("{n}: {e}")),
            })
            .collect();
        parts.join("; ")
    }
}

/// Sends `batch` with top-`k` to every endpoint that is up and waits for all of them or the deadline.
pub async fn fan_out(
    live: &Live,
    snap: &Snapshot,
    client: &reqwest::Client,
    metrics: &Metrics,
    batch: &ImageBatch,
    k: usize,
) -> FanOut {
    let mut shape = vec![batch.n];
    shape.extend_from_slice(&snap.spec.chw);
    let encoded = match encode_outgoing(
        snap.config.variant_wire,
        &snap.spec.name,
        &shape,
        &batch.data,
        k,
    ) {
        Ok(e) => e,
        Err(e) => {
            return FanOut {
                replies: snap
                    .endpoints
                    .iter()
                    .map(|ep| {
                        (
                            ep.index,
                            ep.name.clone(),
                            Outcome::Error(format!("encoding failed: {e}")),
                        )
                    })
                    .collect(),
            };
        }
    };
    let header_len = encoded.header_len;
    let body = bytes::Bytes::from(encoded.body);
    let deadline = Instant::now() + Duration::from_millis(snap.config.deadline_ms);
    let classes = snap.manifest.classes();
    let calls = snap
        .endpoints
        .iter()
        .filter(|e| e.health.is_up())
        .map(|ep| {
            let body = body.clone();
            async move {
                let outcome = match tokio::time::timeout_at(
                    deadline,
                    call(client, ep, body, header_len, batch.n, k, classes),
                )
                .await
                {
                    Ok(Ok(rows)) => Outcome::Ok(rows),
                    Ok(Err(CallError::Down(e))) => {
                        tracing::warn!(variant = %ep.name, error = %e, "variant call failed twice");
                        live.set_up(ep, false);
                        Outcome::Error(e)
                    }
                    Ok(Err(CallError::Bad(e))) => Outcome::Error(e),
                    Err(_) => Outcome::Timeout,
                };
                live.record_reply(ep, matches!(outcome, Outcome::Ok(_)));
                let label = match &outcome {
                    Outcome::Ok(_) => "ok",
                    Outcome::Timeout => "timeout",
                    Outcome::Error(_) => "error",
                };
                metrics
                    .variant_replies
                    .with_label_values(&[ep.name.as_str(), label])
                    .inc();
                (ep.index, ep.name.clone(), outcome)
            }
        });
    FanOut {
        replies: futures::future::join_all(calls).await,
    }
}

enum CallError {
    /// The variant is unreachable or not serving: mark it down.
    Down(String),
    /// The variant answered but the reply is unusable.
    Bad(String),
}

/// Largest reply accepted for `n` samples at top-`k`: 64 bytes per (class, probability) pair (about 20 are
/// used) plus 16 KiB for the envelope and error messages.
pub fn reply_cap(n: usize, k: usize) -> usize {
    n.saturating_mul(k)
        .saturating_mul(64)
        .saturating_add(16 * 1024)
}

/// Sends one infer request; a request that fails before any reply arrives is sent once more at once. A pooled
/// keep-alive connection can be closed by the variant just as it is reused (its idle close racing the request,
/// or an aggregator that was stalled past it), and inference is idempotent; a variant that is really down fails
/// the second attempt as fast as the first.
async fn send(
    client: &reqwest::Client,
    ep: &Endpoint,
    body: &bytes::Bytes,
    header_len: Option<usize>,
) -> Result<reqwest::Response, reqwest::Error> {
    let attempt = || {
        let req = client.post(&ep.infer_url).body(body.clone());
        match header_len {
            None => req.header(reqwest::header::CONTENT_TYPE, "application/json"),
            Some(h) => req
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header("inference-header-content-length", h),
        }
        .send()
    };
    match attempt().await {
        Ok(r) => Ok(r),
        Err(first) => {
            tracing::debug!(variant = %ep.name, error = %error_chain(&first), "variant call failed; retrying once");
            attempt().await
        }
    }
}

async fn call(
    client: &reqwest::Client,
    ep: &Endpoint,
    body: bytes::Bytes,
    header_len: Option<usize>,
    n: usize,
    k: usize,
    classes: usize,
) -> Result<Vec<TopK>, CallError> {
    let mut resp = send(client, ep, &body, header_len)
        .await
        .map_err(|e| CallError::Down(format!("unreachable ({})", error_chain(&e))))?;
    let status = resp.status();
    let cap = reply_cap(n, k);
    if resp.content_length().is_some_and(|l| l > cap as u64) {
        return Err(CallError::Bad(format!(
            "reply is larger than the {cap} bytes a top-{k} reply for {n} samples can need"
        )));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| CallError::Down(format!("reply cut off ({})", error_chain(&e))))?
    {
        if bytes.len() + chunk.len() > cap {
            return Err(CallError::Bad(format!(
                "reply is larger than the {cap} bytes a top-{k} reply for {n} samples can need"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        return Err(CallError::Down("not ready (503)".into()));
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        return Err(CallError::Bad(format!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        )));
    }
    let parsed: InferResponse = serde_json::from_slice(&bytes)
        .map_err(|e| CallError::Bad(format!("malformed reply: {e}")))?;
    parse_topk_response(&parsed, n, k, classes).map_err(CallError::Bad)
}

/// The error and its sources on one line (reqwest's top-level message alone is vague).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
