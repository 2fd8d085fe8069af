//! Integration tests of the operator against the real test control plane (kube-apiserver, etcd, controller
//! manager with the garbage collector and node lifecycle controller, simulated edge nodes): CRD validation,
//! server-side apply with owner references, status, garbage collection, node failure -> reschedule, restart
//! without churn. Each test runs its own operator, scoped to its own namespace, and its own labelled nodes, so
//! tests run in parallel on one shared control plane.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vp_api::{ConditionType, VariantEnsemble};
use vp_operator::config::OperatorConfig;
use vp_operator::controller::{self, Scope};
use vp_operator::failover;
use vp_operator::gate::Gate;
use vp_operator::metrics::Metrics;
use vp_testenv::wait::{Poll, until};
use vp_testenv::{ControlPlane, NodeSpec, TestNamespace, unique_name};

#[path = "cluster/ready.rs"]
mod ready;

const MANIFEST: &str = include_str!("../fixtures/manifest.yaml");
const OWNER_LABEL: &str = "vp.dev/test-owner";
const WAIT: Duration = Duration::from_secs(90);
const VARIANT_PODS: &str = "vp.dev/ensemble=fm,app.kubernetes.io/component=variant";

type Fail = Box<dyn std::error::Error + Send + Sync>;

/// A change that makes a valid ensemble invalid, for the API server's validation tests.
type Breaker = Box<dyn Fn(&mut serde_json::Value)>;

/// A client error as the wait helper's error type.
fn kerr(what: &'static str) -> impl Fn(kube::Error) -> vp_testenv::Error {
    move |e| vp_testenv::Error::Invalid(format!("{what}: {e}"))
}

/// The shared control plane with the CRD installed, and a fresh namespace holding the fixture manifest.
async fn setup(prefix: &str) -> (&'static ControlPlane, TestNamespace) {
    let cp = ControlPlane::shared()
        .await
        .expect("test control plane (run scripts/setup.sh first)");
    let ns = cp.namespace(prefix).await.expect("namespace");
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client().clone());
    for crd in vp_api::crds() {
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("vp-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
    }
    until("CRD established", WAIT, || async {
        let ok = crds
            .get("variantensembles.vp.dev")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        Ok(if ok {
            Poll::Ready(())
        } else {
            Poll::Pending("not established".into())
        })
    })
    .await
    .expect("CRD established");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "fmnist-manifest"}, "data": {"ensemble.yaml": MANIFEST}
    }))
    .expect("configmap");
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .expect("manifest configmap");
    (cp, ns)
}

/// Adds `cpus.len()` nodes labelled for this test; returns their names in order.
async fn add_nodes(cp: &ControlPlane, ns: &TestNamespace, cpus: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    for cpu in cpus {
        let spec = NodeSpec::new(unique_name("edge"))
            .label(OWNER_LABEL, ns.name())
            .label("topology.kubernetes.io/zone", ns.name())
            .cpu(*cpu)
            .memory("4Gi");
        names.push(cp.add_node(spec).await.expect("add node").name);
    }
    names
}

/// A running operator watching one namespace.
struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    metrics: Metrics,
}

impl Operator {
    fn start(ns: &TestNamespace) -> Self {
        Self::start_with(ns, ns.client().clone())
    }

    /// An operator whose API calls go through `client` (e.g. through a [`vp_testenv::Proxy`]).
    fn start_with(ns: &TestNamespace, client: kube::Client) -> Self {
        let metrics = Metrics::new().expect("metrics");
        let (tx, rx) = oneshot::channel();
        let scope = Scope {
            identity: format!("test-{}", ns.name()),
            namespace: Some(ns.name().to_string()),
            concurrency: 16,
            failover: failover::Settings::default(),
            gate: Gate::open(),
        };
        let task = tokio::spawn(controller::run(
            client,
            OperatorConfig::default(),
            metrics.clone(),
            scope,
            Arc::new(AtomicBool::new(false)),
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            stop: Some(tx),
            task,
            metrics,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }
}

fn ensemble(ns: &TestNamespace, variants: &[&str], grace: i32) -> VariantEnsemble {
    let vs: Vec<_> = variants
        .iter()
        .map(|v| json!({"name": v, "source": {"hostPath": format!("/var/lib/vp/{v}.onnx")}}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "vp.dev/v1alpha1", "kind": "VariantEnsemble",
        "metadata": {"name": "fm", "namespace": ns.name()},
        "spec": {
            "model": {"manifest": {"configMap": "fmnist-manifest"}, "classes": 10},
            "topK": 3,
            "variants": vs,
            "placement": {"nodeSelector": {OWNER_LABEL: ns.name()}},
            "failover": {"nodeGraceSeconds": grace},
        }
    }))
    .expect("ensemble")
}

async fn wait_status(
    ns: &TestNamespace,
    what: &str,
    check: impl Fn(&VariantEnsemble) -> bool,
) -> Result<VariantEnsemble, Fail> {
    let api = ns.api::<VariantEnsemble>();
    Ok(until(what, WAIT, || async {
        let e = api.get("fm").await.map_err(kerr("get ensemble"))?;
        Ok(if check(&e) {
            Poll::Ready(e)
        } else {
            Poll::Pending(format!("{:?}", e.status))
        })
    })
    .await?)
}

/// Waits until the ensemble is Ready with `variant` moved or replaced exactly once and serving; returns its
/// status entry.
async fn wait_rescheduled_once(
    ns: &TestNamespace,
    variant: &str,
) -> Result<vp_api::VariantStatus, Fail> {
    let e = wait_status(ns, &format!("Ready again with {variant} replaced"), |e| {
        ready(e)
            && e.status.as_ref().is_some_and(|s| {
                s.variants
                    .iter()
                    .any(|v| v.name == variant && v.reschedules == 1 && v.ready)
            })
    })
    .await?;
    Ok(e.status
        .and_then(|s| s.variants.into_iter().find(|v| v.name == variant))
        .ok_or(variant.to_string())?)
}

/// Asserts that an Event with this reason and a note containing `says` was recorded in the namespace.
async fn assert_event(ns: &TestNamespace, reason: &str, says: &str) -> Result<(), Fail> {
    let evs = ns
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&ListParams::default())
        .await?
        .items;
    assert!(
        evs.iter().any(|e| e.reason.as_deref() == Some(reason)
            && e.note.as_deref().is_some_and(|n| n.contains(says))),
        "no {reason} event saying {says:?}: {:?}",
        evs.iter().map(|e| (&e.reason, &e.note)).collect::<Vec<_>>()
    );
    Ok(())
}

/// A fresh namespace with nodes of the given CPUs, an operator for it, and an ensemble `fm` of `variants` (node
/// grace `grace` s) that is Ready.
async fn ready_ensemble(
    prefix: &str,
    cpus: &[&str],
    variants: &[&str],
    grace: i32,
) -> Result<(&'static ControlPlane, TestNamespace, Operator), Fail> {
    let (cp, ns) = setup(prefix).await;
    add_nodes(cp, &ns, cpus).await;
    let op = Operator::start(&ns);
    ns.api::<VariantEnsemble>()
        .create(&PostParams::default(), &ensemble(&ns, variants, grace))
        .await?;
    wait_status(&ns, "ensemble Ready", ready).await?;
    Ok((cp, ns, op))
}

fn ready(e: &VariantEnsemble) -> bool {
    e.status
        .as_ref()
        .and_then(|s| s.condition(ConditionType::Ready))
        .is_some_and(|c| c.status == "True")
        && e.status.as_ref().and_then(|s| s.observed_generation) == e.metadata.generation
}

fn variant_pods(pods: &[Pod]) -> BTreeMap<String, (String, String)> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let v = p.labels().get("vp.dev/variant")?.clone();
            let node = p.spec.as_ref()?.node_name.clone()?;
            Some((v, (p.name_any(), node)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_create_update_delete() -> Result<(), Fail> {
    let (cp, ns) = setup("ve-life").await;
    let nodes = add_nodes(cp, &ns, &["4", "2", "1"]).await;
    let op = Operator::start(&ns);
    let api = ns.api::<VariantEnsemble>();
    api.create(
        &PostParams::default(),
        &ensemble(&ns, &["v0", "v1", "v2"], 20),
    )
    .await?;

    let e = wait_status(&ns, "ensemble Ready", ready).await?;
    let st = e.status.as_ref().ok_or("status")?;
    assert_eq!((st.available_variants, st.desired_variants), (3, 3));
    assert_eq!(
        st.expected_accuracy,
        Some(0.918),
        "subset {{v0,v1,v2}} at k=3 from the manifest"
    );
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(VARIANT_PODS))
        .await?
        .items;
    let placed = variant_pods(&pods);
    assert_eq!(placed.len(), 3);
    let used: BTreeSet<&String> = placed.values().map(|(_, n)| n).collect();
    assert_eq!(used.len(), 3, "one variant per node: {placed:?}");
    assert_eq!(
        placed["v2"].1, nodes[0],
        "the biggest variant (most MACs) on the 4-CPU node"
    );
    for p in &pods {
        let o = &p.owner_references()[0];
        assert_eq!(
            (o.kind.as_str(), o.name.as_str(), o.controller),
            ("VariantEnsemble", "fm", Some(true))
        );
        assert_eq!(
            p.labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("vp-operator")
        );
    }
    for name in ["fm-v0", "fm-v1", "fm-v2", "fm-aggregator"] {
        ns.api::<Service>().get(name).await?;
    }
    ns.api::<Deployment>().get("fm-aggregator").await?;

    // Update: k 3 -> 2 reaches the aggregator config (which it hot-reloads) and restarts no variant: the
    // aggregator sends k with every request, so k is not part of the variant pod template.
    let before: BTreeSet<(String, Option<String>)> = pods
        .iter()
        .map(|p| (p.name_any(), p.metadata.uid.clone()))
        .collect();
    api.patch(
        "fm",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"topK": 2}})),
    )
    .await?;
    let e = wait_status(&ns, "Ready after the update", ready).await?;
    assert_eq!(
        e.status.as_ref().and_then(|s| s.expected_accuracy),
        Some(0.915)
    );
    let cm = ns.api::<ConfigMap>().get("fm-aggregator").await?;
    assert!(
        cm.data
            .as_ref()
            .and_then(|d| d.get("aggregator.yaml"))
            .is_some_and(|c| c.contains("top_k: 2"))
    );
    let after = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(VARIANT_PODS))
        .await?
        .items;
    let after: BTreeSet<(String, Option<String>)> = after
        .iter()
        .map(|p| (p.name_any(), p.metadata.uid.clone()))
        .collect();
    assert_eq!(after, before, "a topK change replaces no variant pod");

    // Objects deleted by hand come back at once (the operator watches what it owns and re-applies what is
    // missing even though it applied the same object moments ago).
    let uid_of = |s: Service| s.metadata.uid;
    let old_agg = uid_of(ns.api::<Service>().get("fm-aggregator").await?);
    ns.api::<Service>()
        .delete("fm-aggregator", &DeleteParams::default())
        .await?;
    ns.api::<ConfigMap>()
        .delete("fm-aggregator", &DeleteParams::default())
        .await?;
    ns.api::<Service>()
        .delete("fm-v0", &DeleteParams::default())
        .await?;
    until("hand-deleted objects re-created", WAIT, || async {
        let k = kerr("get");
        let agg = ns
            .api::<Service>()
            .get_opt("fm-aggregator")
            .await
            .map_err(&k)?;
        let v0 = ns.api::<Service>().get_opt("fm-v0").await.map_err(&k)?;
        let cm = ns
            .api::<ConfigMap>()
            .get_opt("fm-aggregator")
            .await
            .map_err(&k)?;
        Ok(match (agg, v0, cm) {
            (Some(a), Some(_), Some(_)) if a.metadata.uid != old_agg => Poll::Ready(()),
            other => Poll::Pending(format!(
                "present: aggregator service {}, fm-v0 {}, configmap {}",
                other.0.is_some(),
                other.1.is_some(),
                other.2.is_some()
            )),
        })
    })
    .await?;
    // A hand edit of what the operator owns is undone at once (the Deployment's generation moved).
    ns.api::<Deployment>()
        .patch(
            "fm-aggregator",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "fm-aggregator"}, "spec": {"replicas": 3}
            })),
        )
        .await?;
    until("hand-edited replicas restored", WAIT, || async {
        let d = ns
            .api::<Deployment>()
            .get("fm-aggregator")
            .await
            .map_err(kerr("get"))?;
        let r = d.spec.replicas;
        Ok(if r == Some(1) {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("replicas {r:?}"))
        })
    })
    .await?;
    let applies = |r: &str| op.metrics.applies.with_label_values(&[r]).get();
    assert!(
        applies("skipped") > 0,
        "unchanged objects are not applied again (applied {}, skipped {})",
        applies("applied"),
        applies("skipped")
    );

    // Delete: the garbage collector removes everything the operator created.
    api.delete("fm", &DeleteParams::default()).await?;
    until("owned objects collected", WAIT, || async {
        let lp = ListParams::default().labels("vp.dev/ensemble=fm");
        let k = kerr("list");
        let n = ns.api::<Pod>().list(&lp).await.map_err(&k)?.items.len()
            + ns.api::<Service>().list(&lp).await.map_err(&k)?.items.len()
            + ns.api::<Deployment>()
                .list(&lp)
                .await
                .map_err(&k)?
                .items
                .len()
            + ns.api::<ConfigMap>()
                .list(&lp)
                .await
                .map_err(&k)?
                .items
                .len();
        Ok(if n == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("{n} objects left"))
        })
    })
    .await?;
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_specs_are_rejected_by_the_api_server() -> Result<(), Fail> {
    let (_cp, ns) = setup("ve-invalid").await;
    let api = ns.api::<VariantEnsemble>();
    let cases: [(&str, Breaker); 6] = [
        (
            "aggregator.deadlineMs must be at most 10000: the variant servers end a request after 10 s",
            Box::new(|v| v["spec"]["aggregator"] = json!({"deadlineMs": 20000})),
        ),
        (
            "aggregator.requestTimeoutMs must be larger than aggregator.deadlineMs",
            Box::new(|v| {
                v["spec"]["aggregator"] = json!({"deadlineMs": 2000, "requestTimeoutMs": 1500})
            }),
        ),
        (
            "topK must be at most model.classes / 2",
            Box::new(|v| v["spec"]["topK"] = json!(6)),
        ),
        (
            "variant names must be unique",
            Box::new(|v| v["spec"]["variants"][1]["name"] = json!("v0")),
        ),
        (
            "exactly one of configMap, url, hostPath, persistentVolumeClaim must be set",
            Box::new(|v| v["spec"]["variants"][0]["source"] = json!({})),
        ),
        (
            "metadata.name must be a DNS-1035 label",
            Box::new(|v| v["metadata"]["name"] = json!("9fm")),
        ),
    ];
    for (want, mutate) in cases {
        let mut v = serde_json::to_value(ensemble(&ns, &["v0", "v1"], 20))?;
        mutate(&mut v);
        let obj: VariantEnsemble = serde_json::from_value(v)?;
        let err = api
            .create(&PostParams::default(), &obj)
            .await
            .expect_err(want);
        assert!(err.to_string().contains(want), "{err} should say {want:?}");
    }
    Ok(())
}

/// Variant pods (configMap, URL and PVC sources) and aggregator pods are admitted in a namespace that enforces
/// the `restricted` Pod Security level; a hostPath source is refused by the operator (outside its allowed
/// folders: InvalidSpec) and would be refused by the API server (shown with a bare pod, so the test also proves
/// the PodSecurity admission plugin is on).
#[tokio::test(flavor = "multi_thread")]
async fn restricted_namespace_admits_configmap_url_and_pvc_pods() -> Result<(), Fail> {
    let (cp, ns) = setup("ve-restricted").await;
    add_nodes(cp, &ns, &["2", "2", "2"]).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns.client().clone());
    namespaces
        .patch(
            ns.name(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await?;

    // The API server refuses a hostPath pod here: the plugin is on.
    let bare: Pod = serde_json::from_value(json!({
        "metadata": {"name": "host-path-probe"},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "x", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "m", "hostPath": {"path": "/var/lib/vp/v0.onnx"}}],
        }
    }))?;
    let refused = ns
        .api::<Pod>()
        .create(&PostParams::default(), &bare)
        .await
        .expect_err("a hostPath pod violates restricted");
    assert!(
        refused
            .to_string()
            .contains("violates PodSecurity \"restricted:latest\"")
            && refused.to_string().contains("hostPath"),
        "{refused}"
    );

    let op = Operator::start(&ns);
    let mut ens = ensemble(&ns, &["v0", "v1", "v2"], 20);
    ens.spec.variants[0].source =
        serde_json::from_value(json!({"configMap": {"name": "fmnist-models", "key": "v0.onnx"}}))?;
    ens.spec.variants[1].source = serde_json::from_value(json!({"url": {
        "url": "http://127.0.0.1:9/v1.onnx",
        "sha256": "1111111111111111111111111111111111111111111111111111111111111111"}}))?;
    ens.spec.variants[2].source = serde_json::from_value(
        json!({"persistentVolumeClaim": {"claimName": "models", "path": "fmnist/v2.onnx"}}),
    )?;
    ens.spec.aggregator.replicas = 2;
    ns.api::<VariantEnsemble>()
        .create(&PostParams::default(), &ens)
        .await?;
    let pods = ns.api::<Pod>();
    let admitted = until("variant and aggregator pods admitted", WAIT, || async {
        let all = pods
            .list(&ListParams::default().labels("vp.dev/ensemble=fm"))
            .await
            .map_err(kerr("list pods"))?
            .items;
        let variants = variant_pods(&all);
        let aggregators = all
            .iter()
            .filter(|p| {
                p.labels()
                    .get("app.kubernetes.io/component")
                    .map(String::as_str)
                    == Some("aggregator")
            })
            .count();
        Ok(if variants.len() == 3 && aggregators == 2 {
            Poll::Ready(variants)
        } else {
            Poll::Pending(format!(
                "{} variant, {aggregators} aggregator pods",
                variants.len()
            ))
        })
    })
    .await?;
    assert_eq!(
        admitted.keys().map(String::as_str).collect::<Vec<_>>(),
        ["v0", "v1", "v2"]
    );
    assert_eq!(
        op.metrics.errors.with_label_values(&["kube"]).get(),
        0,
        "no pod creation was refused"
    );
    // With two aggregators the operator keeps one through drains, and NetworkPolicies guard the variants.
    let pdb = ns
        .api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>()
        .get("fm-aggregator")
        .await?;
    assert_eq!(
        pdb.spec.and_then(|s| s.min_available),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let policies: Vec<String> = ns
        .api::<k8s_openapi::api::networking::v1::NetworkPolicy>()
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(policies, ["fm-aggregator", "fm-variants"]);

    // One replica: the budget goes (it would block every drain of that node).
    ns.api::<VariantEnsemble>()
        .patch(
            "fm",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"aggregator": {"replicas": 1}}})),
        )
        .await?;
    let budgets = ns.api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>();
    until("budget removed", WAIT, || async {
        Ok(
            match budgets
                .get_opt("fm-aggregator")
                .await
                .map_err(kerr("get pdb"))?
            {
                None => Poll::Ready(()),
                Some(_) => Poll::Pending("still there".into()),
            },
        )
    })
    .await?;

    // A hostPath outside the operator's allowed folders: InvalidSpec, saying which folders are allowed.
    ns.api::<VariantEnsemble>()
        .patch(
            "fm",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"variants": [
                {"name": "v0", "source": {"hostPath": "/etc/shadow"}},
            ]}})),
        )
        .await?;
    let e = wait_status(&ns, "InvalidSpec for a hostPath outside /var/lib/vp", |e| {
        e.status
            .as_ref()
            .and_then(|s| s.condition(ConditionType::Ready))
            .is_some_and(|c| c.reason == "InvalidSpec")
    })
    .await?;
    let why = e
        .status
        .and_then(|s| s.condition(ConditionType::Ready).cloned())
        .map(|c| c.message)
        .unwrap_or_default();
    assert!(
        why.contains("variant v0: hostPath /etc/shadow is not under a folder this operator allows (/var/lib/vp"),
        "{why}"
    );
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_node_variant_moves_to_spare_and_status_recovers() -> Result<(), Fail> {
    let (cp, ns) = setup("ve-fail").await;
    add_nodes(cp, &ns, &["2", "2", "1"]).await;
    let op = Operator::start(&ns);
    let api = ns.api::<VariantEnsemble>();
    // The shortest grace the API allows (12 s: the simulated kubelets renew every 10 s, as real ones do).
    api.create(&PostParams::default(), &ensemble(&ns, &["v0", "v1"], 12))
        .await?;
    wait_status(&ns, "ensemble Ready", ready).await?;
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(VARIANT_PODS))
        .await?
        .items;
    let before = variant_pods(&pods);
    let (old_pod, dead) = before["v1"].clone();

    cp.kill_node(&dead).await?;
    let v1 = wait_rescheduled_once(&ns, "v1").await?;
    let spare = v1.node.clone().ok_or("v1 node")?;
    assert_ne!(spare, dead);
    assert_ne!(
        Some(spare.clone()),
        before.get("v0").map(|p| p.1.clone()),
        "moved to the spare, not onto v0's node"
    );
    assert!(
        ns.api::<Pod>().get_opt(&old_pod).await?.is_none(),
        "stranded pod removed, not left Terminating"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let evs = events.list(&ListParams::default()).await?.items;
    // Degraded while the variant was away, Recovered once it served again (Events, since a poll may miss the
    // short Degraded window on the fast simulator).
    for reason in ["Degraded", "Recovered"] {
        assert!(
            evs.iter().any(|e| e.reason.as_deref() == Some(reason)),
            "no {reason} event"
        );
    }
    assert!(
        evs.iter()
            .any(|e| e.reason.as_deref() == Some("Rescheduled")
                && e.note.as_deref().is_some_and(|n| n.contains(&dead))),
        "Rescheduled event naming the dead node: {:?}",
        evs.iter().map(|e| (&e.reason, &e.note)).collect::<Vec<_>>()
    );
    assert_eq!(
        op.metrics
            .reschedules
            .with_label_values(&["LeaseExpired"])
            .get(),
        1
    );
    assert_eq!(
        op.metrics
            .node_failures
            .with_label_values(&["LeaseExpired"])
            .get(),
        1
    );
    op.stop().await;
    Ok(())
}

const AGGREGATOR_PODS: &str = "vp.dev/ensemble=fm,app.kubernetes.io/component=aggregator";

/// The live (not terminating) aggregator pods: name, node, ready.
async fn aggregator_pods(ns: &TestNamespace) -> Result<Vec<(String, String, bool)>, kube::Error> {
    Ok(ns
        .api::<Pod>()
        .list(&ListParams::default().labels(AGGREGATOR_PODS))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            (p.name_any(), node.unwrap_or_default(), ready)
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregator_on_a_dead_node_is_replaced_without_waiting_for_eviction() -> Result<(), Fail> {
    let (cp, ns, op) = ready_ensemble("ve-aggfail", &["2", "2", "2"], &["v0"], 12).await?;
    let before = aggregator_pods(&ns).await?;
    assert_eq!(before.len(), 1, "{before:?}");
    let (old_pod, dead, _) = before[0].clone();

    // Kubernetes alone would keep the pod bound to the dead node for 40 s (node monitor grace) + 300 s
    // (unreachable toleration); the operator deletes it once the node's lease is 12 s silent.
    cp.kill_node(&dead).await?;
    until("aggregator replaced on a live node", WAIT, || async {
        let now = aggregator_pods(&ns).await.map_err(kerr("list"))?;
        let e = ns
            .api::<VariantEnsemble>()
            .get("fm")
            .await
            .map_err(kerr("get"))?;
        let replaced = now.len() == 1 && now[0].0 != old_pod && now[0].1 != dead && now[0].2;
        Ok(if replaced && ready(&e) {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("aggregator pods {now:?}"))
        })
    })
    .await?;
    assert!(
        ns.api::<Pod>().get_opt(&old_pod).await?.is_none(),
        "the pod on the dead node is gone, not left Terminating"
    );
    assert_event(&ns, "AggregatorPodReplaced", &dead).await?;
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn evicted_variant_pod_is_replaced_on_another_node() -> Result<(), Fail> {
    let (_, ns, op) = ready_ensemble("ve-evict", &["2", "2", "2"], &["v0", "v1"], 20).await?;
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(VARIANT_PODS))
        .await?
        .items;
    let (victim, node) = variant_pods(&pods)["v0"].clone();

    // What the kubelet reports when it evicts a pod (the simulator, like a kubelet, leaves ended pods alone).
    ns.api::<Pod>()
        .patch_status(
            &victim,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Failed", "reason": "Evicted",
                "message": "The node was low on resource: memory.",
                "conditions": [{"type": "Ready", "status": "False"}]
            }})),
        )
        .await?;
    let v0 = wait_rescheduled_once(&ns, "v0").await?;
    assert_ne!(
        v0.node.as_deref(),
        Some(node.as_str()),
        "replaced away from the node that evicted it while other nodes fit"
    );
    assert!(
        ns.api::<Pod>().get_opt(&victim).await?.is_none(),
        "the failed pod is removed"
    );
    assert_eq!(
        op.metrics
            .reschedules
            .with_label_values(&["PodFailed"])
            .get(),
        1
    );
    assert_event(&ns, "Rescheduled", "Evicted").await?;
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_restart_causes_no_churn() -> Result<(), Fail> {
    let (_, ns, op) = ready_ensemble("ve-restart", &["2", "2"], &["v0", "v1"], 20).await?;
    let uids = |pods: Vec<Pod>| {
        pods.into_iter()
            .filter_map(|p| p.metadata.uid)
            .collect::<BTreeSet<_>>()
    };
    let before = uids(
        ns.api::<Pod>()
            .list(&ListParams::default().labels(VARIANT_PODS))
            .await?
            .items,
    );
    op.stop().await;

    let op = Operator::start(&ns);
    until("the new operator reconciled", WAIT, || async {
        let n = op.metrics.reconciles.with_label_values::<&str>(&[]).get();
        Ok(if n >= 1 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("{n} reconciles"))
        })
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = uids(
        ns.api::<Pod>()
            .list(&ListParams::default().labels(VARIANT_PODS))
            .await?
            .items,
    );
    assert_eq!(before, after, "no pod recreated");
    assert!(ready(&ns.api::<VariantEnsemble>().get("fm").await?));
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_with_only_the_documented_rbac() -> Result<(), Fail> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let (cp, ns) = setup("ve-rbac").await;
    add_nodes(cp, &ns, &["2", "2"]).await;
    let admin = ns.client().clone();
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(include_str!("../rbac/operator.yaml"))
            .map(serde_yaml::Value::deserialize)
            .collect::<Result<_, _>>()?;
    let mut role: ClusterRole = serde_yaml::from_value(docs[0].clone())?;
    let role_name = unique_name("vp-operator");
    role.metadata.name = Some(role_name.clone());
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await?;
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "vp-operator"}}))?;
    ns.api::<ServiceAccount>()
        .create(&PostParams::default(), &sa)
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": role_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": "vp-operator", "namespace": ns.name()}],
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    let client = cp
        .client_for_service_account(ns.name(), "vp-operator")
        .await?;

    // Operator under the service account; the test itself stays admin.
    let metrics = Metrics::new()?;
    let (tx, rx) = oneshot::channel::<()>();
    let scope = Scope {
        identity: "rbac-test".into(),
        namespace: Some(ns.name().to_string()),
        concurrency: 16,
        failover: failover::Settings::default(),
        gate: Gate::open(),
    };
    let task = tokio::spawn(controller::run(
        client,
        OperatorConfig::default(),
        metrics.clone(),
        scope,
        Arc::new(AtomicBool::new(false)),
        async move {
            let _ = rx.await;
        },
    ));
    // Two aggregators: the operator also writes a PodDisruptionBudget and NetworkPolicies under these rules.
    let mut ens = ensemble(&ns, &["v0", "v1"], 20);
    ens.spec.aggregator.replicas = 2;
    ns.api::<VariantEnsemble>()
        .create(&PostParams::default(), &ens)
        .await?;
    wait_status(&ns, "ensemble Ready under the operator's own RBAC", ready).await?;
    ns.api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>()
        .get("fm-aggregator")
        .await?;
    ns.api::<k8s_openapi::api::networking::v1::NetworkPolicy>()
        .get("fm-variants")
        .await?;
    assert_eq!(
        metrics.errors.with_label_values(&["kube"]).get(),
        0,
        "no API call was forbidden"
    );
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    Ok(())
}

/// A `vp-operator` process (the real binary) with leader election on, watching one namespace.
struct OperatorProcess {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl OperatorProcess {
    fn start(cp: &ControlPlane, ns: &TestNamespace, identity: &str) -> Self {
        Self::start_with(cp.kubeconfig(), ns, identity)
    }

    /// A process whose API calls use `kubeconfig` (e.g. one pointing at a [`vp_testenv::Proxy`]); every write it
    /// lets through its write gate is logged (the audit).
    fn start_with(kubeconfig: &std::path::Path, ns: &TestNamespace, identity: &str) -> Self {
        // Not bind(0)-and-close: such a port is in the ephemeral range, where any client can take it first.
        let port = vp_server::ports::free_port().expect("free port");
        let log = std::env::temp_dir().join(format!("{}-{identity}.log", ns.name()));
        let out = std::fs::File::create(&log).expect("operator log");
        let err = out.try_clone().expect("operator log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_vp-operator"))
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,vp_operator::write=debug")
            .env_remove("VP_WATCH_NAMESPACE")
            .env_remove("POD_NAMESPACE")
            .args(["--listen", &format!("127.0.0.1:{port}"), "--leader-elect"])
            .args(["--namespace", ns.name(), "--watch-namespace", ns.name()])
            .args(["--identity", identity, "--log-format", "json"])
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start vp-operator");
        Self { child, port, log }
    }

    /// The `vp_operator_leader` gauge from /metrics (None while it does not answer).
    async fn leader_gauge(&self) -> Option<i64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("vp_operator_leader "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Whether the process has exited.
    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends a signal and waits for the process to exit.
    async fn signal(mut self, sig: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {sig} {pid}");
        let began = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                began.elapsed() < WAIT,
                "operator did not exit within {WAIT:?} of {sig}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the leader Lease names `who` and that process's gauge says it leads; returns the Lease's
/// transition count.
async fn wait_leader(ns: &TestNamespace, who: &str, op: &OperatorProcess) -> Result<i32, Fail> {
    let leases = ns.api::<k8s_openapi::api::coordination::v1::Lease>();
    Ok(until(&format!("{who} leads"), WAIT, || async {
        let spec = leases
            .get_opt("vp-operator-leader")
            .await
            .map_err(kerr("get lease"))?
            .and_then(|l| l.spec);
        let holder = spec.as_ref().and_then(|s| s.holder_identity.clone());
        let gauge = op.leader_gauge().await;
        Ok(if holder.as_deref() == Some(who) && gauge == Some(1) {
            Poll::Ready(spec.and_then(|s| s.lease_transitions).unwrap_or(0))
        } else {
            Poll::Pending(format!("holder {holder:?}, gauge {gauge:?}"))
        })
    })
    .await?)
}

/// Changes topK and waits until the ensemble is Ready at the new generation (somebody reconciled it).
async fn change_and_wait(ns: &TestNamespace, top_k: i32) -> Result<(), Fail> {
    ns.api::<VariantEnsemble>()
        .patch(
            "fm",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"topK": top_k}})),
        )
        .await?;
    wait_status(ns, &format!("Ready at topK {top_k}"), |e| {
        ready(e) && e.spec.top_k == top_k
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_election_hands_over_on_shutdown_and_on_crash() -> Result<(), Fail> {
    let (cp, ns) = setup("ve-leader").await;
    add_nodes(cp, &ns, &["2", "2"]).await;
    let a = OperatorProcess::start(cp, &ns, "replica-a");
    let t_a = wait_leader(&ns, "replica-a", &a).await?;
    let b = OperatorProcess::start(cp, &ns, "replica-b");
    until("the standby answers", WAIT, || async {
        Ok(match b.leader_gauge().await {
            Some(g) => Poll::Ready(g),
            None => Poll::Pending("no answer".into()),
        })
    })
    .await?;
    // Two full retry periods: the standby must not take a lease that is being renewed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(b.leader_gauge().await, Some(0), "the standby does not lead");
    assert_eq!(a.leader_gauge().await, Some(1));
    ns.api::<VariantEnsemble>()
        .create(&PostParams::default(), &ensemble(&ns, &["v0", "v1"], 20))
        .await?;
    wait_status(&ns, "ensemble Ready (replica-a)", ready).await?;

    // Clean shutdown: the leader releases the lease and the standby takes over at its next retry.
    let status = a.signal("-TERM").await;
    assert!(status.success(), "graceful exit, got {status}");
    let t_b = wait_leader(&ns, "replica-b", &b).await?;
    assert_eq!(t_b, t_a + 1, "one transition");
    change_and_wait(&ns, 2).await?;

    // Crash: nobody releases; the standby waits out the lease duration, then acts.
    let a = OperatorProcess::start(cp, &ns, "replica-a");
    until("the new standby answers", WAIT, || async {
        Ok(match a.leader_gauge().await {
            Some(0) => Poll::Ready(()),
            other => Poll::Pending(format!("gauge {other:?}")),
        })
    })
    .await?;
    let crashed = std::time::Instant::now();
    b.signal("-KILL").await;
    let t_a2 = wait_leader(&ns, "replica-a", &a).await?;
    assert_eq!(t_a2, t_b + 1, "one transition");
    assert!(
        crashed.elapsed() >= Duration::from_secs(10),
        "a crashed leader's lease is honoured until it expires (took over after {:?})",
        crashed.elapsed()
    );
    change_and_wait(&ns, 3).await?;
    drop(a);
    Ok(())
}

#[path = "cluster/disruption.rs"]
mod disruption;
#[path = "cluster/leader.rs"]
mod leader;
