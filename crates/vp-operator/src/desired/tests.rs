use super::*;
use crate::config::OperatorConfig;
use crate::fixtures;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use vp_api::EnsembleManifest;

fn cfg() -> OperatorConfig {
    OperatorConfig::default()
}

fn template_of(ens: &VariantEnsemble, i: usize) -> VariantTemplate {
    let m = fixtures::manifest();
    let v = &ens.spec.variants[i];
    let mv = m.variant(&v.name).expect("variant in manifest");
    variant_template(ens, v, mv, &cfg()).expect("template builds")
}

fn pod_on(
    ens: &VariantEnsemble,
    i: usize,
    node: &str,
    replacement: Option<&Replacement<'_>>,
) -> Pod {
    let t = template_of(ens, i);
    variant_pod(ens, &ens.spec.variants[i].name, &t, node, "x", replacement).expect("pod builds")
}

fn pod_for(i: usize) -> Pod {
    pod_on(&fixtures::ensemble(), i, "edge-a", None)
}

#[test]
fn variant_pod_is_pinned_labelled_owned_and_hardened() {
    let pod = pod_for(0);
    let meta = &pod.metadata;
    assert!(
        meta.name
            .as_deref()
            .is_some_and(|n| n.starts_with("fm-v0-") && n.len() == "fm-v0-".len() + 5)
    );
    assert_eq!(meta.namespace.as_deref(), Some("edge"));
    let l = meta.labels.as_ref().expect("labels");
    assert_eq!(l["vp.dev/ensemble"], "fm");
    assert_eq!(l["vp.dev/variant"], "v0");
    assert_eq!(l["app.kubernetes.io/component"], "variant");
    let owner = &meta.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("VariantEnsemble", "fm", Some(true))
    );
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some("edge-a"));
    let c = &spec.containers[0];
    assert_eq!(
        c.args.as_deref().expect("args"),
        [
            "--manifest",
            "/vp/ensemble.yaml",
            "--variant",
            "v0",
            "--request-timeout-ms",
            "10000",
            "--memory-budget-mib",
            "192",
            "--listen",
            "0.0.0.0:8080",
            "--grpc-listen",
            "0.0.0.0:8081",
            "--log-format",
            "json"
        ]
    );
    let sc = c.security_context.as_ref().expect("container security");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        spec.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    assert_eq!(
        spec.tolerations.as_ref().map(Vec::len),
        Some(1),
        "placement tolerations copied"
    );
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/vp/ensemble.yaml", "/vp/v0.onnx"]);
}

#[test]
fn each_model_source_becomes_the_right_volume() {
    // v1: URL -> emptyDir + init container with URL and digest in env (never in the script).
    let p1 = pod_for(1);
    let s1 = p1.spec.as_ref().expect("spec");
    let init = &s1.init_containers.as_ref().expect("init container")[0];
    let env: Vec<(&str, &str)> = init
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
        .collect();
    assert!(env.contains(&("MODEL_URL", "https://models.example/fmnist/v1.onnx")));
    assert!(
        !init
            .command
            .iter()
            .flatten()
            .any(|a| a.contains("models.example"))
    );
    assert!(env.contains(&("MAX_SECONDS", "300")), "{env:?}");
    let bytes = fixtures::manifest()
        .variant("v1")
        .expect("v1 in manifest")
        .bytes;
    assert!(
        env.contains(&("MAX_BYTES", bytes.to_string().as_str())),
        "{env:?}"
    );
    let empty_dir = s1
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "model")
        .and_then(|v| v.empty_dir.clone())
        .expect("emptyDir model volume");
    assert_eq!(
        empty_dir.size_limit.map(|q| q.0),
        Some((bytes + (1 << 20)).to_string()),
        "the emptyDir holds the model and no more"
    );
    // v2: hostPath file.
    let p2 = pod_for(2);
    let vol = p2
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find(|v| v.name == "model"))
        .cloned();
    assert_eq!(
        vol.and_then(|v| v.host_path).map(|h| h.path),
        Some("/var/lib/vp/fmnist/v2.onnx".to_string())
    );
    // v3: PVC with the file as subPath.
    let p3 = pod_for(3);
    let c3 = &p3.spec.as_ref().expect("spec").containers[0];
    let m = c3
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "model")
        .expect("model mount");
    assert_eq!(m.sub_path.as_deref(), Some("fmnist/v3.onnx"));
}

#[test]
fn pod_names_are_stable_and_change_with_node_or_template() {
    let ens = fixtures::ensemble();
    let a1 = pod_on(&ens, 0, "edge-a", None);
    let failure = Replacement {
        failed_since: "2026-01-01T00:00:00Z".parse().expect("time"),
        reason: "LeaseExpired",
    };
    let a2 = pod_on(&ens, 0, "edge-a", Some(&failure));
    let b = pod_on(&ens, 0, "edge-b", None);
    assert_eq!(
        a1.metadata.name, a2.metadata.name,
        "annotations do not rename the pod"
    );
    assert_eq!(
        a2.annotations().get(FAILED_SINCE).map(String::as_str),
        Some("2026-01-01T00:00:00Z")
    );
    assert_ne!(a1.metadata.name, b.metadata.name);
    let mut ens2 = ens.clone();
    ens2.spec.images.variant = Some("example/vp-variant:2".into());
    assert_ne!(
        a1.metadata.name,
        pod_on(&ens2, 0, "edge-a", None).metadata.name,
        "a new template gets a new pod"
    );
}

#[test]
fn top_k_is_not_part_of_the_pod_template() {
    // The aggregator sends k with every request: a topK change reloads its config and restarts no variant.
    let ens = fixtures::ensemble();
    let mut ens2 = ens.clone();
    ens2.spec.top_k = 2;
    assert_eq!(template_of(&ens, 0), template_of(&ens2, 0));
    let m = fixtures::manifest();
    assert_ne!(
        aggregator_config(&ens, &m).expect("config").top_k,
        aggregator_config(&ens2, &m).expect("config").top_k
    );
}

#[test]
fn bad_manifest_file_names_are_refused() {
    let ens = fixtures::ensemble();
    let mut mv = fixtures::manifest().variants[0].clone();
    mv.file = "../../etc/passwd".into();
    let e = variant_template(&ens, &ens.spec.variants[0], &mv, &cfg()).expect_err("refused");
    assert!(e.to_string().contains("plain file name"), "{e}");
}

#[test]
fn aggregator_config_follows_the_dataplane_format() {
    let ens = fixtures::ensemble();
    let cm = aggregator_configmap(&ens, &fixtures::manifest(), fixtures::MANIFEST).expect("cm");
    let text = &cm.data.expect("data")[AGGREGATOR_CONFIG_KEY];
    let v: serde_yaml::Value = serde_yaml::from_str(text).expect("yaml");
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["manifest"], "ensemble.yaml");
    assert_eq!(v["top_k"], 3);
    assert_eq!(v["deadline_ms"], 150);
    assert_eq!(v["min_variants"], 2);
    assert_eq!(v["combine"], "soft_vote");
    assert_eq!(
        v["weights"]["v2"], 0.9,
        "weighted soft vote uses manifest accuracies"
    );
    assert_eq!(v["variants"][1]["url"], "http://fm-v1.edge.svc:8080");
    assert_eq!(v["variants"].as_sequence().map(Vec::len), Some(4));
}

/// The config text the operator writes into the ConfigMap is read and checked by the aggregator's own reader
/// and validator (`AggregatorConfig::from_yaml`, `validate` against the manifest copy in the same ConfigMap),
/// for every combine rule.
#[test]
fn aggregator_config_round_trips_through_the_aggregators_reader() {
    for rule in [
        vp_api::CombineRule::SoftVote,
        vp_api::CombineRule::WeightedSoftVote,
        vp_api::CombineRule::MajorityVote,
    ] {
        let mut ens = fixtures::ensemble();
        ens.spec.combine = rule;
        let built = aggregator_config(&ens, &fixtures::manifest()).expect("config");
        let cm = aggregator_configmap(&ens, &fixtures::manifest(), fixtures::MANIFEST).expect("cm");
        let data = cm.data.expect("data");
        let read = vp_api::AggregatorConfig::from_yaml(&data[AGGREGATOR_CONFIG_KEY])
            .expect("the aggregator reads what the operator writes");
        let manifest = vp_api::EnsembleManifest::from_yaml(&data[MANIFEST_KEY]).expect("manifest");
        read.validate(&manifest)
            .expect("the aggregator accepts what the operator writes");
        assert_eq!(read, built, "{rule:?}: nothing lost on the way");
        assert_eq!(read.combine, vp_api::DataPlaneCombineRule::from(rule));
        assert_eq!(read.weights.is_empty(), !rule.weighs_by_accuracy());
        assert_eq!(read.model_name(&manifest), "fm");
    }
}

#[test]
fn out_of_range_spec_values_are_refused_not_wrapped() {
    let mut ens = fixtures::ensemble();
    ens.spec.aggregator.deadline_ms = -1;
    let e = aggregator_config(&ens, &fixtures::manifest()).expect_err("refused");
    assert!(e.to_string().contains("deadlineMs -1"), "{e}");
}

#[test]
fn aggregator_objects() {
    let ens = fixtures::ensemble();
    let cm = aggregator_configmap(&ens, &fixtures::manifest(), fixtures::MANIFEST).expect("cm");
    let data = cm.data.clone().expect("data");
    assert_eq!(data[MANIFEST_KEY], fixtures::MANIFEST);
    assert!(data.contains_key(AGGREGATOR_CONFIG_KEY));
    let digest = configmap_digest(&cm);
    assert_eq!(
        digest,
        vp_api::config_digest(
            data[AGGREGATOR_CONFIG_KEY].as_bytes(),
            fixtures::MANIFEST.as_bytes()
        ),
        "the digest the aggregator computes from the mounted files"
    );
    let d = aggregator_deployment(&ens, &cfg(), &digest).expect("deployment");
    let spec = d.spec;
    assert_eq!(spec.replicas, Some(2));
    let template = spec.template.metadata.as_ref().expect("template metadata");
    assert_eq!(
        template.annotations.as_ref().expect("annotations")[CONFIG_DIGEST],
        digest
    );
    let args = spec.template.spec.as_ref().expect("pod").containers[0]
        .args
        .clone()
        .expect("args");
    let flag = args
        .iter()
        .position(|a| a == "--expect-config-digest")
        .expect("the aggregator is told which config to serve");
    assert_eq!(args[flag + 1], digest);
    let pod = spec.template.spec.expect("pod spec");
    let spread = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .expect("aggregator replicas prefer different nodes");
    let term = &spread[0].pod_affinity_term;
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    let sel = term
        .label_selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .expect("selector");
    assert_eq!(
        (
            sel["vp.dev/ensemble"].as_str(),
            sel["app.kubernetes.io/component"].as_str()
        ),
        ("fm", "aggregator")
    );
    assert_eq!(
        pod.node_selector.expect("selector")["node-role.kubernetes.io/edge"],
        "true"
    );
    let svc = aggregator_service(&ens).expect("svc").spec.expect("spec");
    assert_eq!(svc.type_.as_deref(), Some("NodePort"));
    assert_eq!(svc.ports.expect("ports")[0].port, 9000);
    assert_eq!(
        aggregator_endpoint(&ens).as_deref(),
        Some("http://fm-aggregator.edge.svc:9000")
    );
    let vs = variant_service(&ens, "v2").expect("svc");
    assert_eq!(vs.metadata.name.as_deref(), Some("fm-v2"));
    assert_eq!(
        vs.spec.and_then(|s| s.selector).expect("selector")["vp.dev/variant"],
        "v2"
    );
}

#[test]
fn memory_budget_is_three_quarters_of_the_limit() {
    let res = |limit: Option<&str>| ResourceRequirements {
        limits: limit.map(|l| BTreeMap::from([("memory".to_string(), Quantity(l.into()))])),
        ..ResourceRequirements::default()
    };
    assert_eq!(memory_budget_mib(&res(Some("256Mi"))), Some(192));
    assert_eq!(memory_budget_mib(&res(Some("1Gi"))), Some(768));
    assert_eq!(memory_budget_mib(&res(Some("200M"))), Some(142));
    assert_eq!(
        memory_budget_mib(&res(None)),
        None,
        "no limit: the server's default"
    );
    assert_eq!(memory_budget_mib(&res(Some("lots"))), None);
    // The aggregator gets its own: 75 % of its 128Mi default limit, and the spec's request timeout.
    let mut ens = fixtures::ensemble();
    ens.spec.aggregator.request_timeout_ms = Some(5000);
    let d = aggregator_deployment(&ens, &cfg(), "d1").expect("deployment");
    let args = d.spec.template.spec.expect("pod").containers[0]
        .args
        .clone()
        .expect("args");
    assert_eq!(
        args,
        [
            "--config",
            "/etc/vp/aggregator.yaml",
            "--expect-config-digest",
            "d1",
            "--request-timeout-ms",
            "5000",
            "--memory-budget-mib",
            "96",
            "--listen",
            "0.0.0.0:8080",
            "--grpc-listen",
            "0.0.0.0:8081",
            "--log-format",
            "json"
        ]
    );
    // A variant's own resources win over the default.
    let mut ens = fixtures::ensemble();
    ens.spec.variants[0].resources = Some(res(Some("512Mi")));
    let args = template_of(&ens, 0).spec.containers[0]
        .args
        .clone()
        .expect("args");
    assert!(
        args.windows(2).any(|w| w == ["--memory-budget-mib", "384"]),
        "{args:?}"
    );
}

#[test]
fn network_policies_guard_the_variants_and_open_the_aggregator() {
    let ens = fixtures::ensemble();
    let d = aggregator_deployment(&ens, &cfg(), "d1").expect("deployment");
    let nps = ensemble_network_policies(&ens, &fixtures::manifest(), &cfg(), &d).expect("policies");
    let names: Vec<_> = nps.iter().map(|p| p.name_any()).collect();
    assert_eq!(names, ["fm-variants", "fm-aggregator"]);
    let v = nps[0].spec.as_ref().expect("spec");
    assert_eq!(
        v.pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .map(|l| l["app.kubernetes.io/component"].as_str()),
        Some("variant")
    );
    let rule = &v.ingress.as_ref().expect("ingress")[0];
    let from = rule
        .from
        .as_ref()
        .expect("variants take traffic only from listed peers");
    assert_eq!(
        from[0]
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .map(|l| (
                l["vp.dev/ensemble"].as_str(),
                l["app.kubernetes.io/component"].as_str()
            )),
        Some(("fm", "aggregator"))
    );
    assert!(
        from[0].namespace_selector.is_none(),
        "the aggregator of this namespace only"
    );
    assert_eq!(
        from[1]
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .map(|l| l["kubernetes.io/metadata.name"].as_str()),
        Some("monitoring")
    );
    let ports: Vec<_> = rule
        .ports
        .iter()
        .flatten()
        .map(|p| p.port.clone())
        .collect();
    // Every port of the container: HTTP and gRPC.
    assert_eq!(
        ports,
        [Some(IntOrString::Int(8080)), Some(IntOrString::Int(8081))],
        "HTTP and gRPC"
    );
    let a = nps[1].spec.as_ref().expect("spec");
    let arule = &a.ingress.as_ref().expect("ingress")[0];
    assert!(arule.from.is_none(), "anyone may call the aggregator");
    assert_eq!(arule.ports.as_ref().map(Vec::len), Some(2));
    assert_eq!(
        a.policy_types.as_deref(),
        Some(&["Ingress".to_string()][..])
    );
    // Switched off, or without monitoring.
    let off = OperatorConfig {
        network_policies: false,
        ..cfg()
    };
    assert!(
        ensemble_network_policies(&ens, &fixtures::manifest(), &off, &d)
            .expect("none")
            .is_empty()
    );
    let quiet = OperatorConfig {
        monitoring_namespace: None,
        ..cfg()
    };
    let nps = ensemble_network_policies(&ens, &fixtures::manifest(), &quiet, &d).expect("policies");
    assert_eq!(
        nps[0]
            .spec
            .as_ref()
            .and_then(|s| s.ingress.as_ref())
            .map(|i| i[0].from.as_ref().map(Vec::len)),
        Some(Some(1))
    );
}

#[test]
fn a_disruption_budget_only_with_several_aggregators() {
    let mut ens = fixtures::ensemble();
    let pdb = aggregator_disruption_budget(&ens)
        .expect("builds")
        .expect("2 replicas");
    assert_eq!(pdb.name_any(), "fm-aggregator");
    let spec = pdb.spec.expect("spec");
    assert_eq!(spec.min_available, Some(IntOrString::Int(1)));
    assert_eq!(
        spec.selector
            .and_then(|s| s.match_labels)
            .map(|l| l["app.kubernetes.io/component"].clone()),
        Some("aggregator".to_string())
    );
    ens.spec.aggregator.replicas = 1;
    assert!(
        aggregator_disruption_budget(&ens)
            .expect("builds")
            .is_none()
    );
}

#[test]
fn objects_without_uid_are_refused() {
    let mut ens = fixtures::ensemble();
    ens.metadata.uid = None;
    assert!(matches!(
        variant_service(&ens, "v0"),
        Err(BuildError::Metadata(_))
    ));
}

/// Runs the URL source's init container exactly as the pod would (its command, its environment), with the
/// folder, URL and digest replaced, against a real HTTP server serving the shipped model files.
mod fetch {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output};

    struct Server(Child, u16);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn models() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fmnist")
    }

    fn serve() -> Server {
        // Not bind(0)-and-close: such a port is in the ephemeral range, where any client can take it first.
        let port = vp_server::ports::free_port().expect("free port");
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .arg("--directory")
            .arg(models())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let server = Server(child, port);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("http.server did not listen on {port}");
    }

    /// The init container's command and environment from the built pod (fixture variant v1 has a URL source).
    fn init_container() -> (Vec<String>, Vec<(String, String)>) {
        let pod = pod_for(1);
        let init = pod
            .spec
            .and_then(|s| s.init_containers)
            .and_then(|c| c.into_iter().next())
            .expect("init container");
        let env = init
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        (init.command.expect("command"), env)
    }

    fn run(dir: &Path, url: &str, sha256: &str, file: &str) -> Output {
        let bytes = std::fs::metadata(models().join(file)).map_or(1 << 20, |m| m.len());
        run_limited(dir, url, sha256, file, bytes, 300)
    }

    /// Runs the init container with `max_bytes` as the manifest's size and `max_seconds` as the time limit.
    fn run_limited(
        dir: &Path,
        url: &str,
        sha256: &str,
        file: &str,
        max_bytes: u64,
        max_seconds: u32,
    ) -> Output {
        let (command, env) = init_container();
        let mut cmd = Command::new(&command[0]);
        // PATH holds only what the fetch image must have (sh, curl, sha256sum, mv), as in the site's image.
        cmd.args(&command[1..]).env_clear().env("PATH", tools());
        for (k, v) in env {
            let v = match k.as_str() {
                "DIR" => dir.display().to_string(),
                "MODEL_URL" => url.to_string(),
                "MODEL_SHA256" => sha256.to_string(),
                "FILE" => file.to_string(),
                "MAX_BYTES" => max_bytes.to_string(),
                "MAX_SECONDS" => max_seconds.to_string(),
                _ => v,
            };
            cmd.env(k, v);
        }
        cmd.output().expect("run the init script")
    }

    fn shipped() -> (String, String) {
        let text = std::fs::read_to_string(models().join("ensemble.yaml")).expect("manifest");
        let m = EnsembleManifest::from_yaml(&text).expect("shipped manifest");
        (m.variants[0].file.clone(), m.variants[0].sha256.clone())
    }

    #[test]
    fn downloads_and_verifies_a_real_model() {
        let server = serve();
        let (file, sha) = shipped();
        let dir = tempdir();
        let out = run(
            &dir,
            &format!("http://127.0.0.1:{}/{file}", server.1),
            &sha,
            &file,
        );
        assert!(out.status.success(), "{out:?}");
        let got = std::fs::read(dir.join(&file)).expect("model in place");
        let want = std::fs::read(models().join(&file)).expect("shipped model");
        assert_eq!(got, want);
        assert!(!dir.join(format!("{file}.part")).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_wrong_digest_or_a_missing_file_leaves_no_model() {
        let server = serve();
        let (file, _) = shipped();
        let dir = tempdir();
        let url = format!("http://127.0.0.1:{}/{file}", server.1);
        let out = run(&dir, &url, &"0".repeat(64), &file);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("does not have the manifest's sha256 0000"),
            "the script names the failure: {err}"
        );
        assert!(
            !dir.join(&file).exists(),
            "an unverified model is never given its real name"
        );

        let out = run(
            &dir,
            &format!("http://127.0.0.1:{}/no-such.onnx", server.1),
            &"0".repeat(64),
            "no-such.onnx",
        );
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("404"),
            "curl names the HTTP error: {out:?}"
        );
        assert!(!dir.join("no-such.onnx").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A folder with links to exactly the programs the fetch image is documented to hold (one fixed folder,
    /// reused by every run, so that nothing accumulates in the temporary folder).
    fn tools() -> PathBuf {
        let dir = std::env::temp_dir().join("vp-fetch-tools");
        std::fs::create_dir_all(&dir).expect("tools folder");
        for tool in ["sh", "curl", "sha256sum", "mv"] {
            let found = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{tool} is not installed"));
            match std::os::unix::fs::symlink(found, dir.join(tool)) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    panic!("link {tool}: {e}")
                }
                _ => {}
            }
        }
        dir
    }

    /// A loopback HTTP server answering every request with `head` and then `body_chunks` chunks of 64 KiB,
    /// `pause` apart; returns its port and how many body bytes it managed to send.
    fn raw_server(
        head: &'static str,
        body_chunks: usize,
        pause: std::time::Duration,
    ) -> (u16, std::thread::JoinHandle<u64>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = std::thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else {
                return 0;
            };
            let mut req = [0u8; 4096];
            let _ = conn.read(&mut req);
            if conn.write_all(head.as_bytes()).is_err() {
                return 0;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            for _ in 0..body_chunks {
                if conn.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len() as u64;
                std::thread::sleep(pause);
            }
            sent
        });
        (port, handle)
    }

    fn stderr(out: &Output) -> String {
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// Bytes of every file under `dir`.
    fn used(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    #[test]
    fn a_file_larger_than_the_manifest_says_is_refused() {
        // Announced length over the limit: curl refuses before writing.
        let server = serve();
        let (file, sha) = shipped();
        let size = std::fs::metadata(models().join(&file))
            .expect("model")
            .len();
        let dir = tempdir();
        let url = format!("http://127.0.0.1:{}/{file}", server.1);
        let out = run_limited(&dir, &url, &sha, &file, size - 1, 60);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(&format!("is larger than the manifest's {} bytes", size - 1)),
            "{out:?}"
        );
        assert_eq!(used(&dir), 0, "no data left behind");

        // No length and an endless body (up to 64 MiB): the file-size limit stops it a block past the limit.
        let (port, sent) = raw_server(
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
            1024,
            std::time::Duration::ZERO,
        );
        let url = format!("http://127.0.0.1:{port}/{file}");
        let out = run_limited(&dir, &url, &sha, &file, 100_000, 60);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("is larger than the manifest's 100000 bytes"),
            "{out:?}"
        );
        assert_eq!(used(&dir), 0, "the partial download is emptied");
        let sent = sent.join().expect("server");
        assert!(
            sent < 64 << 20,
            "the download was cut short ({sent} bytes sent)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_slow_download_gives_up_at_the_time_limit() {
        // 10 MB announced, then 64 KiB a second: the whole body would take about 150 s.
        let (port, _sent) = raw_server(
            "HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n",
            150,
            std::time::Duration::from_secs(1),
        );
        let (file, sha) = shipped();
        let dir = tempdir();
        let url = format!("http://127.0.0.1:{port}/{file}");
        let out = run_limited(&dir, &url, &sha, &file, 10_000_000, 2);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("took longer than 2 s"),
            "the script names the limit: {out:?}"
        );
        assert_eq!(used(&dir), 0, "the partial download is emptied");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vp-fetch-{}-{}",
            std::process::id(),
            crate::hash::short(format!("{:?}", std::time::Instant::now()).as_bytes(), 8)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
