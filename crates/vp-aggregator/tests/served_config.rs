//! The aggregator says which config it serves, as a real process: `/v1/status` reports the digest of the
//! config and manifest bytes it loaded (the same [`vp_core::config_digest`] the operator computes from the
//! ConfigMap it writes), and with `--expect-config-digest` it stays unready until the files on disk (as a
//! kubelet updates a mounted ConfigMap, some time later) are the expected ones, then turns ready without a
//! restart. A rejected config keeps it unready.

use serde_json::{Value, json};
use std::time::{Duration, Instant};

mod common;

use common::*;

/// Polls `path` until `ok` holds for (status, body); panics with the last answer after 10 s.
async fn wait_for(agg: &Aggregator, path: &str, ok: impl Fn(u16, &Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, v) = get_json(agg, path).await;
        if ok(st, &v) {
            return v;
        }
        assert!(Instant::now() < end, "{path}: still {st} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_served_config_and_is_ready_only_on_the_expected_one() {
    let v0 = fake(fake_spec("v0", 1, 0.9)).await;
    let old = config(&[("v0", &v0)], "");
    let new = config(&[("v0", &v0)], "top_k: 2\n");
    let manifest = manifest_yaml();
    let old_digest = vp_core::config_digest(old.as_bytes(), manifest.as_bytes());
    let new_digest = vp_core::config_digest(new.as_bytes(), manifest.as_bytes());
    assert_ne!(old_digest, new_digest);

    // The operator's new pod starts while the kubelet still shows it the old config.
    let agg = start_with("digest", &old, &["--expect-config-digest", &new_digest]).await;
    let (st, status) = get_json(&agg, "/v1/status").await;
    assert_eq!(st, 200);
    assert_eq!(status["config_digest"], json!(old_digest));
    assert_eq!(status["expected_config_digest"], json!(new_digest));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (st, ready) = get_json(&agg, "/v2/health/ready").await;
    assert_eq!(
        st, 503,
        "a stale config is not ready even with every variant up: {ready}"
    );
    assert!(
        ready["error"]
            .as_str()
            .is_some_and(|e| e.contains(&old_digest) && e.contains(&new_digest)),
        "{ready}"
    );
    let (st, _) = get_json(&agg, "/v2/models/fake/ready").await;
    assert_eq!(st, 503, "the model's readiness says the same");

    // The mounted file catches up: the aggregator reloads it and turns ready, no restart.
    std::fs::write(agg.dir.join("aggregator.yaml"), &new).expect("write");
    wait_for(&agg, "/v2/health/ready", |st, _| st == 200).await;
    let (_, status) = get_json(&agg, "/v1/status").await;
    assert_eq!(status["config_digest"], json!(new_digest));
    assert_eq!(status["top_k"], json!(2));

    // A newer config that the aggregator rejects: it keeps serving the last good one and, expecting the
    // rejected one, is unready; the digest it reports is still the one it serves.
    let bad = "schema_version: 1\nmanifest: ensemble.yaml\nvariants: [{name: v7, url: http://x}]\n";
    std::fs::write(agg.dir.join("aggregator.yaml"), bad).expect("write");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, status) = get_json(&agg, "/v1/status").await;
    assert_eq!(status["config_digest"], json!(new_digest));
    let (st, v) = infer(&agg, &image_request(None)).await;
    assert_eq!((st, &v["parameters"]["k"]), (200, &json!(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_expected_digest_readiness_is_as_before() {
    let v0 = fake(fake_spec("v0", 1, 0.9)).await;
    let text = config(&[("v0", &v0)], "");
    let agg = start("nodigest", &text).await;
    let v = wait_for(&agg, "/v2/health/ready", |st, _| st == 200).await;
    assert_eq!(v["ready"], json!(true));
    let (_, status) = get_json(&agg, "/v1/status").await;
    assert_eq!(
        status["config_digest"],
        json!(vp_core::config_digest(
            text.as_bytes(),
            manifest_yaml().as_bytes()
        ))
    );
    assert_eq!(status["expected_config_digest"], Value::Null);
}
