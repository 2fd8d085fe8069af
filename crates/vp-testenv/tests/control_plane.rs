//! Proof that the test control plane behaves as a real cluster does: CRD schemas and CEL rules, watches, node
//! heartbeats and the node lifecycle controller, garbage collection, RBAC. All tests share one control plane
//! (one per test binary) and run in parallel; each uses its own namespace and its own nodes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use vp_testenv::wait::{Poll, until};
use vp_testenv::{
    ControlPlane, Error, NodeSpec, NodeState, StartOptions, TestNamespace, unique_name,
};

/// Label that ties simulated nodes to the test that added them (tests select their own nodes with it).
const OWNER_LABEL: &str = "vp.dev/test-owner";

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("test fixture is valid")
}

async fn setup(prefix: &str) -> (&'static ControlPlane, TestNamespace) {
    // Display, not Debug: the message says what to do (e.g. run scripts/setup.sh).
    let cp = ControlPlane::shared()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ns = cp.namespace(prefix).await.unwrap_or_else(|e| panic!("{e}"));
    (cp, ns)
}

/// Adds `n` nodes labelled for this test and waits until they are Ready and schedulable.
async fn add_nodes(cp: &ControlPlane, ns: &TestNamespace, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        // A zone of its own per test: the node lifecycle controller stops tainting in a zone whose nodes are all
        // down (it suspects its own network), so each failure test keeps one live node in its zone.
        let spec = NodeSpec::new(unique_name("edge"))
            .label(OWNER_LABEL, ns.name())
            .label("topology.kubernetes.io/zone", ns.name())
            .cpu("2")
            .memory("2Gi");
        let info = cp.add_node(spec).await.expect("add node");
        assert_eq!(info.state, NodeState::Alive);
        names.push(info.name);
    }
    let nodes: Api<Node> = Api::all(ns.client().clone());
    for name in &names {
        wait_node(&nodes, name, "True", false, Duration::from_secs(60))
            .await
            .expect("node Ready");
    }
    names
}

fn ready_status(node: &Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

fn taints(node: &Node) -> Vec<(String, String)> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| (t.key.clone(), t.effect.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until node `name` has Ready=`status` and (if `unreachable`) the two unreachable taints, or (if not)
/// no taints at all.
async fn wait_node(
    nodes: &Api<Node>,
    name: &str,
    status: &str,
    unreachable: bool,
    timeout: Duration,
) -> Result<Node, Error> {
    until(
        &format!("node {name} Ready={status}, unreachable taints={unreachable}"),
        timeout,
        || async {
            let node = nodes
                .get(name)
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let (got, t) = (ready_status(&node), taints(&node));
            let want_taints: Vec<(String, String)> = if unreachable {
                vec![
                    ("node.kubernetes.io/unreachable".into(), "NoExecute".into()),
                    ("node.kubernetes.io/unreachable".into(), "NoSchedule".into()),
                ]
            } else {
                vec![]
            };
            let mut sorted = t.clone();
            sorted.sort();
            Ok(if got == status && sorted == want_taints {
                Poll::Ready(node)
            } else {
                Poll::Pending(format!("Ready={got}, taints={t:?}"))
            })
        },
    )
    .await
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_pod<F: Fn(&Pod) -> bool>(pods: &Api<Pod>, name: &str, what: &str, f: F) -> Pod {
    until(
        &format!("pod {name} {what}"),
        Duration::from_secs(90),
        || async {
            let pod = pods
                .get(name)
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?;
            Ok(if f(&pod) {
                Poll::Ready(pod)
            } else {
                Poll::Pending(format!("{:?}", pod.status))
            })
        },
    )
    .await
    .expect("pod condition")
}

fn pinned_pod(name: &str, node: &str) -> Pod {
    from_json(json!({
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "main", "image": "registry.invalid/vp/variant:test"}]
        }
    }))
}

async fn lease_renew_time(client: &Client, node: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = leases.get(node).await.expect("node lease exists");
    lease
        .spec
        .and_then(|s| s.renew_time)
        .map(|t| format!("{:?}", t.0))
}

#[tokio::test]
async fn crd_schema_and_cel_rule_are_enforced_and_valid_objects_are_watched() {
    let (_cp, ns) = setup("crd").await;
    let client = ns.client().clone();
    // A group of its own, so the test also passes against a long-lived control plane (VP_TESTENV_DATA_DIR).
    let group = format!("{}.testenv.vp.dev", ns.name());
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = from_json(json!({
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["replicas"],
                        "properties": {
                            "replicas": {"type": "integer", "minimum": 0},
                            "minReplicas": {"type": "integer", "minimum": 0}
                        },
                        "x-kubernetes-validations": [{
                            "rule": "!has(self.minReplicas) || self.minReplicas <= self.replicas",
                            "message": "minReplicas must not exceed replicas"
                        }]
                    }}
                }}
            }]
        }
    }));
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("CRD accepted");
    until("CRD established", Duration::from_secs(60), || async {
        let crd = crds
            .get(&format!("widgets.{group}"))
            .await
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let established = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        Ok(if established {
            Poll::Ready(())
        } else {
            Poll::Pending("not established".into())
        })
    })
    .await
    .expect("established");

    let gvk = GroupVersionKind::gvk(&group, "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &ar);
    let mut events = watcher(widgets.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();

    let widget = |name: &str, spec: serde_json::Value| -> DynamicObject {
        from_json(
            json!({"apiVersion": format!("{group}/v1"), "kind": "Widget", "metadata": {"name": name}, "spec": spec}),
        )
    };
    // The CEL rule rejects this one, with the rule's message.
    let err = widgets
        .create(
            &PostParams::default(),
            &widget("bad-cel", json!({"replicas": 1, "minReplicas": 3})),
        )
        .await
        .expect_err("CEL rule must reject minReplicas > replicas");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status
                    .message
                    .contains("minReplicas must not exceed replicas"),
                "{}",
                status.message
            );
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    // The structural schema rejects a wrong type and a missing required field.
    for (name, spec, needle) in [
        ("bad-type", json!({"replicas": "three"}), "spec.replicas"),
        (
            "bad-missing",
            json!({"minReplicas": 1}),
            "spec.replicas: Required value",
        ),
        (
            "bad-negative",
            json!({"replicas": -1}),
            "should be greater than or equal to 0",
        ),
    ] {
        match widgets
            .create(&PostParams::default(), &widget(name, spec))
            .await
        {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{name}: {status:?}");
                assert!(
                    status.message.contains(needle),
                    "{name}: {}",
                    status.message
                );
            }
            other => panic!("{name}: expected a 422 rejection, got {other:?}"),
        }
    }
    // A valid object is accepted and arrives on the watch.
    widgets
        .create(
            &PostParams::default(),
            &widget("good", json!({"replicas": 3, "minReplicas": 1})),
        )
        .await
        .expect("valid widget accepted");
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(obj) = events.try_next().await.expect("watch stream") {
            if obj.metadata.name.as_deref() == Some("good") {
                return obj;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("the valid widget is watched");
    assert_eq!(seen.data["spec"]["replicas"], json!(3));
    let all = widgets.list(&ListParams::default()).await.expect("list");
    assert_eq!(all.items.len(), 1, "only the valid widget was stored");
}

/// The three node-failure scenarios each wait ~25-50 s for the node lifecycle controller, so they run
/// concurrently in one test (the test harness runs only as many tests at once as there are cores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_failures_are_detected_and_recovered() {
    tokio::join!(
        killed_node_goes_unknown_and_tainted_then_revives(),
        partitioned_node_goes_unknown_and_its_pods_survive_the_heal(),
        private_control_plane_takes_options_and_stops_cleanly_on_drop(),
    );
}

async fn killed_node_goes_unknown_and_tainted_then_revives() {
    let (cp, ns) = setup("kill").await;
    let client = ns.client().clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let names = add_nodes(cp, &ns, 3).await;
    let victim = names[0].clone();

    // A pod on the victim runs, as a kubelet would run it.
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &pinned_pod("on-victim", &victim))
        .await
        .expect("pod");
    let pod = wait_pod(&pods, "on-victim", "Running and Ready", pod_ready).await;
    assert_eq!(
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .as_deref(),
        Some(victim.as_str())
    );

    let killed = cp.kill_node(&victim).await.expect("kill");
    assert_eq!(killed.state, NodeState::Dead);
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let renew_at_kill = lease_renew_time(&client, &victim).await;

    wait_node(&nodes, &victim, "Unknown", true, Duration::from_secs(150))
        .await
        .expect("victim Unknown and tainted");
    let detected = killed_at.elapsed();
    eprintln!("node lifecycle controller marked {victim} Unknown {detected:.1?} after the kill");
    assert_eq!(
        lease_renew_time(&client, &victim).await,
        renew_at_kill,
        "a dead node's Lease must not be renewed"
    );
    // The node controller also marks the pods of an unreachable node not ready.
    wait_pod(&pods, "on-victim", "not Ready (node unreachable)", |p| {
        !pod_ready(p)
    })
    .await;
    for other in &names[1..] {
        let node = nodes.get(other).await.expect("node");
        assert_eq!(ready_status(&node), "True", "{other} stays Ready");
        assert!(taints(&node).is_empty(), "{other} stays untainted");
    }

    assert_eq!(
        cp.revive_node(&victim).await.expect("revive").state,
        NodeState::Alive
    );
    wait_node(&nodes, &victim, "True", false, Duration::from_secs(60))
        .await
        .expect("victim back");
    until(
        "the revived node's Lease to be renewed",
        Duration::from_secs(30),
        || async {
            let now = lease_renew_time(&client, &victim).await;
            Ok(if now != renew_at_kill {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("renewTime still {now:?}"))
            })
        },
    )
    .await
    .expect("heartbeats resumed");
    // The node rebooted: the pod's container restarted and it is Ready again.
    let pod = wait_pod(&pods, "on-victim", "Ready again after reboot", pod_ready).await;
    let restarts = pod
        .status
        .and_then(|s| s.container_statuses)
        .map(|cs| cs[0].restart_count);
    assert_eq!(restarts, Some(1));
}

async fn partitioned_node_goes_unknown_and_its_pods_survive_the_heal() {
    let (cp, ns) = setup("part").await;
    let nodes: Api<Node> = Api::all(ns.client().clone());
    let names = add_nodes(cp, &ns, 2).await;
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &pinned_pod("survivor", &names[0]))
        .await
        .expect("pod");
    wait_pod(&pods, "survivor", "Ready", pod_ready).await;

    assert_eq!(
        cp.partition_node(&names[0]).await.expect("partition").state,
        NodeState::Partitioned
    );
    wait_node(&nodes, &names[0], "Unknown", true, Duration::from_secs(150))
        .await
        .expect("Unknown and tainted");
    cp.revive_node(&names[0]).await.expect("heal");
    wait_node(&nodes, &names[0], "True", false, Duration::from_secs(60))
        .await
        .expect("healed");
    let pod = wait_pod(&pods, "survivor", "Ready after the heal", pod_ready).await;
    let restarts = pod
        .status
        .and_then(|s| s.container_statuses)
        .map(|cs| cs[0].restart_count);
    assert_eq!(restarts, Some(0), "a partition does not restart containers");
}

#[tokio::test]
async fn dependents_are_garbage_collected_with_their_owner() {
    let (cp, ns) = setup("gc").await;
    let client = ns.client().clone();
    let cms: Api<ConfigMap> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let owner = cms
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "owner"}, "data": {"k": "v"}})),
        )
        .await
        .expect("owner");
    let owner_ref = json!([{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner.metadata.uid.clone().expect("uid"), "blockOwnerDeletion": true
    }]);
    cms.create(
        &PostParams::default(),
        &from_json(json!({"metadata": {"name": "dep-cm", "ownerReferences": owner_ref}})),
    )
    .await
    .expect("dependent configmap");
    secrets
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "dep-secret", "ownerReferences": owner_ref}})),
        )
        .await
        .expect("dependent secret");
    cms.create(
        &PostParams::default(),
        &from_json(json!({"metadata": {"name": "bystander"}})),
    )
    .await
    .expect("unrelated configmap");

    cms.delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    until(
        "dependents garbage-collected",
        Duration::from_secs(60),
        || async {
            let cm = cms
                .get_opt("dep-cm")
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let secret = secrets
                .get_opt("dep-secret")
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?;
            Ok(if cm.is_none() && secret.is_none() {
                Poll::Ready(())
            } else {
                Poll::Pending(format!(
                    "configmap left: {}, secret left: {}",
                    cm.is_some(),
                    secret.is_some()
                ))
            })
        },
    )
    .await
    .expect("garbage collection");
    assert!(
        cms.get_opt("bystander").await.expect("get").is_some(),
        "objects without the owner stay"
    );

    // A Deployment deleted in the foreground goes only after its ReplicaSet and pods (on a simulated node) are
    // gone: deployment and replicaset controllers, scheduler, garbage collector and node simulator together.
    let node = add_nodes(cp, &ns, 1).await.remove(0);
    let deployments: Api<Deployment> = ns.api();
    let labels = BTreeMap::from([("app".to_string(), "gc-demo".to_string())]);
    deployments
        .create(&PostParams::default(), &from_json(json!({
            "metadata": {"name": "gc-demo"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {OWNER_LABEL: ns.name()},
                        "containers": [{"name": "main", "image": "registry.invalid/vp/aggregator:test"}]
                    }
                }
            }
        })))
        .await
        .expect("deployment");
    let pods: Api<Pod> = ns.api();
    until(
        "two deployment pods Ready on the test node",
        Duration::from_secs(90),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=gc-demo"))
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let ready = list
                .items
                .iter()
                .filter(|p| {
                    pod_ready(p)
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                            == Some(node.as_str())
                })
                .count();
            Ok(if ready == 2 {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("{ready} ready"))
            })
        },
    )
    .await
    .expect("pods ready");
    deployments
        .delete("gc-demo", &DeleteParams::foreground())
        .await
        .expect("delete deployment");
    until(
        "deployment, replicaset and pods gone",
        Duration::from_secs(90),
        || async {
            let d = deployments
                .get_opt("gc-demo")
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let p = pods
                .list(&ListParams::default().labels("app=gc-demo"))
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?;
            Ok(if d.is_none() && p.items.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending(format!(
                    "deployment left: {}, pods left: {}",
                    d.is_some(),
                    p.items.len()
                ))
            })
        },
    )
    .await
    .expect("foreground deletion");
    drop(client);
}

#[tokio::test]
async fn rbac_restricts_a_service_account_to_its_role() {
    let (cp, ns) = setup("rbac").await;
    let sas: Api<ServiceAccount> = ns.api();
    sas.create(
        &PostParams::default(),
        &from_json(json!({"metadata": {"name": "reader"}})),
    )
    .await
    .expect("sa");
    let roles: Api<Role> = ns.api();
    roles
        .create(&PostParams::default(), &from_json(json!({
            "metadata": {"name": "configmap-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]
        })))
        .await
        .expect("role");
    let bindings: Api<RoleBinding> = ns.api();
    bindings
        .create(&PostParams::default(), &from_json(json!({
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns.name()}]
        })))
        .await
        .expect("binding");
    let reader = cp
        .client_for_service_account(ns.name(), "reader")
        .await
        .expect("sa client");
    let cms: Api<ConfigMap> = Api::namespaced(reader.clone(), ns.name());
    cms.list(&ListParams::default())
        .await
        .expect("the role allows listing configmaps");
    let secrets: Api<Secret> = Api::namespaced(reader.clone(), ns.name());
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.contains("system:serviceaccount"),
                "{}",
                status.message
            );
        }
        other => panic!("listing secrets must be forbidden, got {other:?}"),
    }
    let write = cms
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "nope"}})),
        )
        .await;
    assert!(
        matches!(write, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{write:?}"
    );
}

#[tokio::test]
async fn node_operations_reject_bad_requests_clearly() {
    let (cp, ns) = setup("bad").await;
    let missing = unique_name("ghost");
    let err = cp.kill_node(&missing).await.expect_err("unknown node");
    assert!(
        err.to_string().contains("404") && err.to_string().contains(&missing),
        "{err}"
    );

    let name = add_nodes(cp, &ns, 1).await.remove(0);
    let err = cp
        .add_node(NodeSpec::new(&name))
        .await
        .expect_err("duplicate");
    assert!(
        err.to_string().contains("409") && err.to_string().contains("already exists"),
        "{err}"
    );

    let err = cp
        .add_node(NodeSpec::new(unique_name("edge")).cpu("lots"))
        .await
        .expect_err("bad quantity");
    assert!(
        err.to_string().contains("400") && err.to_string().contains("cpu \"lots\""),
        "{err}"
    );
    let err = cp
        .add_node(NodeSpec::new(unique_name("edge")).arch("z80"))
        .await
        .expect_err("bad arch");
    assert!(err.to_string().contains("arch \"z80\""), "{err}");
    let err = cp
        .add_node(NodeSpec::new(unique_name("edge")).label("bad key!", "v"))
        .await
        .expect_err("bad label");
    assert!(err.to_string().contains("label key"), "{err}");
    assert!(matches!(
        cp.kill_node("../nodes").await,
        Err(Error::Invalid(_))
    ));

    // Removing a node deletes its Node object; its Lease goes with it (owner reference).
    cp.remove_node(&name).await.expect("remove");
    let nodes: Api<Node> = Api::all(ns.client().clone());
    assert!(nodes.get_opt(&name).await.expect("get").is_none());
    assert!(
        !cp.nodes()
            .await
            .expect("list")
            .iter()
            .any(|n| n.name == name)
    );
}

async fn private_control_plane_takes_options_and_stops_cleanly_on_drop() {
    // A shorter node monitor grace period than the default 50 s, as a test of fast failover might choose.
    let cp = ControlPlane::start(StartOptions {
        nodes: 2,
        controller_manager_args: vec!["--node-monitor-grace-period=20s".into()],
        ..Default::default()
    })
    .await
    .expect("private control plane");
    let pid = cp.state().pid;
    let data_dir = cp.state().data_dir.clone();
    let client = cp.client().await.expect("client");
    let nodes: Api<Node> = Api::all(client);
    for name in ["edge-0", "edge-1"] {
        let node = nodes.get(name).await.expect("initial node");
        assert_eq!(ready_status(&node), "True", "{name}");
    }
    cp.kill_node("edge-0").await.expect("kill");
    let killed_at = Instant::now();
    wait_node(&nodes, "edge-0", "Unknown", true, Duration::from_secs(90))
        .await
        .expect("Unknown with the shorter grace period");
    let detected = killed_at.elapsed();
    eprintln!(
        "with --node-monitor-grace-period=20s the node went Unknown {detected:.1?} after the kill"
    );
    assert!(
        detected < Duration::from_secs(45),
        "the override took effect: {detected:?}"
    );

    // Dropping waits (blocking) for the process to exit.
    tokio::task::block_in_place(|| drop(cp));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still exists after drop"
    );
    assert!(
        !data_dir.exists(),
        "data dir {} left behind",
        data_dir.display()
    );
}

#[tokio::test]
async fn added_nodes_look_like_edge_devices_with_heartbeats() {
    let (cp, ns) = setup("shape").await;
    let name = unique_name("edge");
    let info = cp
        .add_node(
            NodeSpec::new(&name)
                .label(OWNER_LABEL, ns.name())
                .label("topology.kubernetes.io/zone", ns.name())
                .cpu("1500m")
                .memory("1Gi")
                .pods(20)
                .arch("arm"),
        )
        .await
        .expect("add node");
    assert!(
        info.ip.starts_with("127.1."),
        "loopback node IP: {}",
        info.ip
    );
    let nodes: Api<Node> = Api::all(ns.client().clone());
    let node = wait_node(&nodes, &name, "True", false, Duration::from_secs(60))
        .await
        .expect("Ready");
    let labels = node.metadata.labels.clone().unwrap_or_default();
    for (k, v) in [
        ("kubernetes.io/arch", "arm"),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/hostname", name.as_str()),
        ("node-role.kubernetes.io/edge", ""),
        ("vp.dev/simulated-node", "true"),
        (OWNER_LABEL, ns.name()),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    let status = node.status.expect("status");
    let allocatable = status.allocatable.expect("allocatable");
    assert_eq!(allocatable["cpu"].0, "1500m");
    assert_eq!(allocatable["memory"].0, "1Gi");
    assert_eq!(allocatable["pods"].0, "20");
    assert_eq!(status.node_info.expect("node info").architecture, "arm");

    // Ready status and the first Lease renewal are two separate writes (as with a kubelet): Ready does not
    // imply that the Lease exists yet, so wait for it rather than read it once.
    let leases: Api<Lease> = Api::namespaced(ns.client().clone(), "kube-node-lease");
    let lease = until(
        &format!("Lease kube-node-lease/{name}"),
        Duration::from_secs(30),
        || async {
            Ok(match leases.get_opt(&name).await {
                Ok(Some(lease)) => Poll::Ready(lease),
                Ok(None) => Poll::Pending("not created yet".into()),
                Err(e) => return Err(Error::Invalid(e.to_string())),
            })
        },
    )
    .await
    .expect("node lease");
    let owner = &lease.metadata.owner_references.expect("lease owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Node", name.as_str())
    );
    let spec = lease.spec.expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(name.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(40));
}
