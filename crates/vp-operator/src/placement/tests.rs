use super::*;
use crate::health::FailureReason;
use k8s_openapi::api::core::v1::{NodeAffinity, NodeSelector};

fn node(name: &str, cpu: f64) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        labels: BTreeMap::from([("role".to_string(), "edge".to_string())]),
        taints: vec![],
        unschedulable: false,
        cpu,
        memory: 4e9,
        used_cpu: 0.0,
        used_memory: 0.0,
        health: Health::Healthy,
    }
}

fn demand(name: &str, weight: u64) -> Demand {
    Demand {
        name: name.into(),
        weight,
        cpu: 0.5,
        memory: 1e8,
        current: None,
        avoid: vec![],
    }
}

fn spread() -> Constraints {
    Constraints::default()
}

#[test]
fn one_variant_per_node_biggest_on_strongest() {
    let nodes = [node("small", 1.0), node("big", 4.0), node("mid", 2.0)];
    let d = [demand("v0", 10), demand("v1", 300), demand("v2", 50)];
    let p = place(&d, &nodes, &spread());
    assert_eq!(p.assigned["v1"], "big");
    assert_eq!(p.assigned["v2"], "mid");
    assert_eq!(p.assigned["v0"], "small");
    assert!(p.unplaced.is_empty());
}

#[test]
fn serving_variants_stay_put() {
    let nodes = [node("small", 1.0), node("big", 4.0)];
    let mut d = [demand("v0", 10), demand("v1", 300)];
    d[0].current = Some("big".into());
    let p = place(&d, &nodes, &spread());
    assert_eq!(
        p.assigned["v0"], "big",
        "never moves a serving variant to rebalance"
    );
    assert_eq!(p.assigned["v1"], "small");
}

#[test]
fn variants_leave_failed_nodes_for_spares() {
    let mut nodes = [node("a", 2.0), node("b", 2.0), node("spare", 1.0)];
    nodes[0].health = Health::Failed(FailureReason::LeaseExpired { silent_s: 21 });
    let mut d = [demand("v0", 10), demand("v1", 10)];
    d[0].current = Some("a".into());
    d[1].current = Some("b".into());
    let p = place(&d, &nodes, &spread());
    assert_eq!(p.assigned["v0"], "spare");
    assert_eq!(p.assigned["v1"], "b");
}

#[test]
fn shares_nodes_only_when_they_run_out() {
    let nodes = [node("a", 4.0), node("b", 2.0)];
    let d = [demand("v0", 3), demand("v1", 2), demand("v2", 1)];
    let p = place(&d, &nodes, &spread());
    assert_eq!(p.assigned["v0"], "a");
    assert_eq!(p.assigned["v1"], "b");
    assert_eq!(
        p.assigned["v2"], "a",
        "third variant shares the stronger node"
    );
}

#[test]
fn packed_fills_the_strongest_node() {
    let nodes = [node("a", 4.0), node("b", 2.0)];
    let d = [demand("v0", 3), demand("v1", 2), demand("v2", 1)];
    let c = Constraints {
        strategy: PlacementStrategy::Packed,
        ..spread()
    };
    let p = place(&d, &nodes, &c);
    assert!(p.assigned.values().all(|n| n == "a"), "{:?}", p.assigned);
}

#[test]
fn respects_resources_and_explains() {
    let mut nodes = [node("a", 1.0), node("b", 1.0)];
    nodes[1].used_cpu = 0.8;
    let d = [demand("v0", 2), demand("v1", 1), demand("v2", 0)];
    let p = place(&d, &nodes, &spread());
    assert_eq!(p.assigned.len(), 2, "{p:?}");
    let why = &p.unplaced["v2"];
    assert!(
        why.contains("2 node(s)") && why.contains("2 too little free resources (needs 0.5 CPU"),
        "{why}"
    );
}

#[test]
fn respects_selector_taints_affinity_cordon_and_explains() {
    let mut nodes = [
        node("a", 1.0),
        node("b", 1.0),
        node("c", 1.0),
        node("d", 1.0),
        node("e", 1.0),
    ];
    nodes[0].labels.insert("role".into(), "core".into());
    nodes[1].taints.push(Taint {
        key: "dedicated".into(),
        value: Some("gpu".into()),
        effect: "NoSchedule".into(),
        ..Taint::default()
    });
    nodes[1].labels.insert("zone".into(), "z1".into());
    nodes[2].unschedulable = true;
    nodes[3].labels.insert("zone".into(), "z2".into());
    nodes[4].labels.insert("zone".into(), "z1".into());
    nodes[4].health = Health::Failed(FailureReason::NotReady);
    let affinity = Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: "zone".into(),
                        operator: "In".into(),
                        values: Some(vec!["z1".into()]),
                    }]),
                    match_fields: None,
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    };
    let c = Constraints {
        node_selector: BTreeMap::from([("role".to_string(), "edge".to_string())]),
        affinity: Some(affinity),
        ..spread()
    };
    let p = place(&[demand("v0", 1)], &nodes, &c);
    let why = &p.unplaced["v0"];
    for part in [
        "5 node(s)",
        "1 does not match nodeSelector role=edge",
        "1 has untolerated taint dedicated=gpu:NoSchedule",
        "1 cordoned",
        "1 does not match required node affinity",
        "1 failed (node Ready condition is not True)",
    ] {
        assert!(why.contains(part), "{why:?} lacks {part:?}");
    }
    // Tolerating the taint opens node b, the only edge node in zone z1 that is healthy and uncordoned.
    let tol = Toleration {
        key: Some("dedicated".into()),
        operator: Some("Exists".into()),
        ..Toleration::default()
    };
    let c2 = Constraints {
        tolerations: vec![tol],
        affinity: None,
        ..c
    };
    let p = place(&[demand("v0", 1)], &nodes, &c2);
    assert_eq!(p.assigned.get("v0").map(String::as_str), Some("b"));
}

#[test]
fn avoided_nodes_are_last_resort() {
    let nodes = [node("big", 4.0), node("small", 1.0)];
    let mut d = demand("v0", 1);
    d.avoid = vec!["big".into()];
    assert_eq!(
        place(std::slice::from_ref(&d), &nodes, &spread()).assigned["v0"],
        "small"
    );
    let only = [node("big", 4.0)];
    assert_eq!(place(&[d], &only, &spread()).assigned["v0"], "big");
}

#[test]
fn toleration_matching_follows_kubernetes() {
    let t = Taint {
        key: "k".into(),
        value: Some("v".into()),
        effect: "NoExecute".into(),
        ..Taint::default()
    };
    let tol = |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
        Toleration {
            key: key.map(Into::into),
            operator: op.map(Into::into),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            ..Toleration::default()
        }
    };
    assert!(
        tolerates(&tol(None, Some("Exists"), None, None), &t),
        "wildcard"
    );
    assert!(
        tolerates(&tol(Some("k"), None, Some("v"), None), &t),
        "Equal is the default"
    );
    assert!(!tolerates(&tol(Some("k"), None, Some("w"), None), &t));
    assert!(
        !tolerates(
            &tol(Some("k"), Some("Exists"), None, Some("NoSchedule")),
            &t
        ),
        "effect must match"
    );
    assert!(tolerates(
        &tol(Some("k"), Some("Exists"), None, Some("NoExecute")),
        &t
    ));
}

#[test]
fn no_nodes_is_explained() {
    let p = place(&[demand("v0", 1)], &[], &spread());
    assert_eq!(p.unplaced["v0"], "no nodes in the cluster");
}

#[test]
fn kubernetes_health_taints_do_not_shed_variants() {
    // A node back from a disruption still carries the unreachable taint for a few seconds: its variant stays.
    let mut nodes = vec![node("a", 2.0), node("b", 2.0)];
    nodes[0].taints.push(Taint {
        key: "node.kubernetes.io/unreachable".into(),
        effect: "NoExecute".into(),
        ..Taint::default()
    });
    let d = Demand {
        current: Some("a".into()),
        ..demand("v0", 10)
    };
    let placed = place(&[d], &nodes, &Constraints::default());
    assert_eq!(placed.assigned.get("v0").map(String::as_str), Some("a"));
}
