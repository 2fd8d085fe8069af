//! The aggregator as a real process against stand-in variant servers (in-process axum servers with scripted
//! replies, delays and faults; the real variant servers are exercised end to end in vpctl's tests): combining,
//! deadline, faulty and dead variants, min_variants, bad input, and config hot reload.

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combines_replies_and_degrades_on_slow_faulty_and_dead_variants() {
    let v0 = fake(fake_spec("v0", 3, 0.6)).await;
    let v1 = fake(fake_spec("v1", 5, 0.5)).await;
    let v2 = fake(fake_spec("v2", 5, 0.4)).await;
    let agg = start(
        "combine",
        &config(
            &[("v0", &v0), ("v1", &v1), ("v2", &v2)],
            "deadline_ms: 300\n",
        ),
    )
    .await;
    let (st, v) = infer(&agg, &image_request(None)).await;
    assert_eq!(st, 200, "{v}");
    // Soft vote: class 5 gets 0.5 + 0.4 = 0.9 against 0.6 for class 3.
    assert_eq!(v["outputs"][0]["data"], json!([5]));
    assert_eq!(v["parameters"]["variants"], json!(["v0", "v1", "v2"]));
    assert_eq!(v["parameters"]["degraded"], json!(false));
    assert!((v["parameters"]["expected_accuracy"].as_f64().expect("acc") - 0.57).abs() < 1e-9);
    let scores = v["outputs"][1]["data"].as_array().expect("scores");
    assert!(
        (scores[5].as_f64().expect("s") - 0.3).abs() < 1e-6,
        "{scores:?}"
    );

    // Bad input is rejected once, at the aggregator, with a clear message.
    let c = client();
    for (body, want, msg) in [
        (
            json!({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "INT8", "data": [1]}]}),
            400,
            "UINT8",
        ),
        (
            json!({"inputs": [{"name": "image", "shape": [2, 1, 28, 28], "datatype": "UINT8", "data": vec![0u8; 784]}]}),
            400,
            "must hold 1568",
        ),
        (image_request(Some(6)), 400, "between 1 and 5"),
        (json!({"nope": 1}), 400, "malformed"),
    ] {
        let (st, v) = infer(&agg, &body).await;
        assert_eq!(st, want, "{v}");
        assert!(v["error"].as_str().unwrap_or("").contains(msg), "{v}");
    }
    let r = c
        .post(format!("{}/v2/models/other/infer", agg.base))
        .json(&image_request(None))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    let r = c
        .post(format!("{}/v1/classify", agg.base))
        .body("not an image")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 422);
    assert!(r.text().await.expect("text").contains("not a PNG or JPEG"));
    let r = c
        .post(format!("{}/v1/classify?k=0", agg.base))
        .body(vec![0u8; 10])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let r = c
        .post(format!("{}/v1/classify", agg.base))
        .body(vec![0u8; 200_000])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413);
    let mut png = Vec::new();
    image::GrayImage::from_pixel(50, 40, image::Luma([9]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    let r = c
        .post(format!("{}/v1/classify?k=2", agg.base))
        .body(png)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        (v["class"].clone(), v["label"].clone(), v["k"].clone()),
        (json!(5), json!("c5"), json!(2))
    );
    assert_eq!(v["variants"], json!(["v0", "v1", "v2"]));

    // A slow variant misses the deadline, a broken one answers garbage: the answer comes from the rest, in time.
    let slow = fake(Fake {
        delay: Duration::from_secs(3),
        ..fake_spec("v1", 5, 0.5)
    })
    .await;
    let broken = fake(Fake {
        garbage: true,
        ..fake_spec("v2", 5, 0.4)
    })
    .await;
    let agg2 = start(
        "slow",
        &config(
            &[("v0", &v0), ("v1", &slow), ("v2", &broken)],
            "deadline_ms: 200\n",
        ),
    )
    .await;
    let t = Instant::now();
    let (st, v) = infer(&agg2, &image_request(None)).await;
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "waited {:?}",
        t.elapsed()
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["outputs"][0]["data"], json!([3]));
    assert_eq!(v["parameters"]["variants"], json!(["v0"]));
    assert_eq!(v["parameters"]["degraded"], json!(true));
    let metrics = c
        .get(format!("{}/metrics", agg2.base))
        .send()
        .await
        .expect("m")
        .text()
        .await
        .expect("t");
    assert!(
        metrics
            .contains("vp_aggregator_variant_replies_total{outcome=\"timeout\",variant=\"v1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vp_aggregator_variant_replies_total{outcome=\"error\",variant=\"v2\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vp_aggregator_degraded_answers_total 1"),
        "{metrics}"
    );

    // min_variants = 2 with only one good variant: 503 naming what went wrong.
    let agg3 = start(
        "min",
        &config(&[("v0", &v0), ("v2", &broken)], "min_variants: 2\n"),
    )
    .await;
    let (st, v) = infer(&agg3, &image_request(None)).await;
    assert_eq!(st, 503, "{v}");
    let msg = v["error"].as_str().unwrap_or("");
    assert!(
        msg.contains("only 1 of 2 variants answered") && msg.contains("v2: malformed reply"),
        "{msg}"
    );

    // No variant alive at all: 503 with a clear message, and the aggregator says it is not ready.
    let dead = "http://127.0.0.1:9".to_string();
    let agg4 = start("dead", &config(&[("v0", &dead)], "")).await;
    let (st, v) = infer(&agg4, &image_request(None)).await;
    assert_eq!(st, 503, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("variant"), "{v}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = c
        .get(format!("{}/v2/health/ready", agg4.base))
        .send()
        .await
        .expect("ready");
    assert_eq!(r.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_are_picked_up_without_restart() {
    let v0 = fake(fake_spec("v0", 1, 0.9)).await;
    let v1 = fake(fake_spec("v1", 2, 0.8)).await;
    let agg = start("reload", &config(&[("v0", &v0)], "")).await;
    let (_, v) = infer(&agg, &image_request(None)).await;
    assert_eq!(v["parameters"]["variants"], json!(["v0"]));
    let path: &Path = &agg.dir.join("aggregator.yaml");
    std::fs::write(path, config(&[("v0", &v0), ("v1", &v1)], "top_k: 2\n")).expect("write");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = infer(&agg, &image_request(None)).await;
        if v["parameters"]["variants"] == json!(["v0", "v1"]) {
            assert_eq!(v["parameters"]["k"], json!(2));
            break;
        }
        assert!(Instant::now() < end, "new config not picked up: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An invalid change is rejected; the last good config stays in force.
    std::fs::write(
        path,
        "schema_version: 1\nmanifest: ensemble.yaml\nvariants: [{name: v7, url: http://x}]\n",
    )
    .expect("write");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (st, v) = infer(&agg, &image_request(None)).await;
    assert_eq!(st, 200);
    assert_eq!(v["parameters"]["variants"], json!(["v0", "v1"]));
    let metrics = client()
        .get(format!("{}/metrics", agg.base))
        .send()
        .await
        .expect("m")
        .text()
        .await
        .expect("t");
    assert!(
        metrics.contains("vp_aggregator_config_reloads_total{outcome=\"error\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vp_aggregator_config_reloads_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
}
