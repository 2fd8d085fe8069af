//! `vpctl classify <image>`: sends a PNG or JPEG file to the running ensemble's `/v1/classify` and prints the
//! answer (class, score, which variants answered, expected accuracy).

use crate::CliError;
use crate::runstate::RunState;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ClassifyArgs {
    /// Image file (PNG or JPEG); converted to the family's input (grayscale, resized).
    pub image: PathBuf,
    /// Aggregator base URL; default: the ensemble started by `vpctl run`.
    #[arg(long)]
    pub url: Option<String>,
    /// State folder of `vpctl run` (to find the aggregator).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// k each variant replies with (default: the aggregator's).
    #[arg(long)]
    pub k: Option<usize>,
    /// Print the raw JSON reply.
    #[arg(long)]
    pub json: bool,
}

/// The aggregator URL from a flag or the running ensemble's state.
pub fn aggregator_url(
    url: &Option<String>,
    state_dir: &Option<PathBuf>,
) -> Result<String, CliError> {
    if let Some(u) = url {
        return Ok(u.trim_end_matches('/').to_string());
    }
    let dir = state_dir
        .clone()
        .unwrap_or_else(crate::runstate::default_dir);
    Ok(RunState::read(&dir)?.aggregator.url)
}

pub async fn classify(a: ClassifyArgs) -> Result<(), CliError> {
    let url = aggregator_url(&a.url, &a.state_dir)?;
    let bytes = std::fs::read(&a.image)
        .map_err(|e| CliError::msg(format!("{}: {e}", a.image.display())))?;
    let mut target = format!("{url}/v1/classify");
    if let Some(k) = a.k {
        target.push_str(&format!("?k={k}"));
    }
    let resp = crate::procs::client()?
        .post(&target)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .map_err(|e| CliError::msg(format!("cannot reach the aggregator at {url}: {e}")))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| CliError::msg(format!("unreadable reply from {url}: {e}")))?;
    if !status.is_success() {
        return Err(CliError::msg(format!(
            "{status}: {}",
            body["error"].as_str().unwrap_or("(no message)")
        )));
    }
    if a.json {
        println!("{body}");
        return Ok(());
    }
    let top = &body["scores"][0];
    let variants: Vec<&str> = body["variants"]
        .as_array()
        .map(|v| v.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    println!(
        "{} (class {}, score {:.3})",
        body["label"].as_str().unwrap_or("?"),
        body["class"],
        top["score"].as_f64().unwrap_or(0.0)
    );
    println!(
        "variants: {}{}; expected accuracy {}",
        variants.join(", "),
        if body["degraded"].as_bool() == Some(true) {
            " (degraded)"
        } else {
            ""
        },
        body["expected_accuracy"]
            .as_f64()
            .map(|x| format!("{:.2}%", x * 100.0))
            .unwrap_or_else(|| "unknown".into())
    );
    if let Some(scores) = body["scores"].as_array() {
        for s in scores.iter().skip(1).take(4) {
            println!(
                "  also: {:<12} {:.3}",
                s["label"].as_str().unwrap_or("?"),
                s["score"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}
