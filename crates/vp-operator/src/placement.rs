//! Placement: which node each variant of an ensemble runs on.
//!
//! Rules, in order: a variant already running on a node that is still healthy and eligible stays there (moving
//! back or rebalancing is never done to a serving variant); the others are placed biggest first (by MACs) on the
//! eligible node that fits its requests, preferring nodes that hold none of this ensemble's variants
//! (OnePerNode) and, among those, the one with the most allocatable CPU; Packed fills the strongest node that
//! fits. A variant that fits nowhere gets a reason that counts why each node was excluded.

use crate::health::Health;
use k8s_openapi::api::core::v1::{
    Affinity, NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration,
};
use std::collections::BTreeMap;
use vp_api::PlacementStrategy;

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    pub taints: Vec<Taint>,
    /// Cordoned (spec.unschedulable).
    pub unschedulable: bool,
    /// Allocatable CPU, cores.
    pub cpu: f64,
    /// Allocatable memory, bytes.
    pub memory: f64,
    /// Requests of other ensembles' variant pods already on the node (cores, bytes).
    pub used_cpu: f64,
    /// See `used_cpu`.
    pub used_memory: f64,
    /// Health for this ensemble's grace.
    pub health: Health,
}

/// What one variant needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    /// Variant name.
    pub name: String,
    /// Compute weight (MACs per input): bigger variants are placed first, on stronger nodes.
    pub weight: u64,
    /// CPU request, cores.
    pub cpu: f64,
    /// Memory request, bytes.
    pub memory: f64,
    /// The node its serving pod runs on, if it has one worth keeping.
    pub current: Option<String>,
    /// Nodes to use only when nothing else fits (e.g. where its pod just failed).
    pub avoid: Vec<String>,
}

/// The ensemble's placement constraints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Constraints {
    /// Spread or pack.
    pub strategy: PlacementStrategy,
    /// Required node labels.
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity is honoured; preferred terms are left to nobody (documented).
    pub affinity: Option<Affinity>,
    /// Tolerations of the variant pods.
    pub tolerations: Vec<Toleration>,
}

/// The result: a node per placed variant and a reason per unplaced one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    /// Variant -> node.
    pub assigned: BTreeMap<String, String>,
    /// Variant -> why no node fits.
    pub unplaced: BTreeMap<String, String>,
}

/// Why a node cannot take variants of this ensemble at all (independent of the variant).
fn exclusion(node: &NodeInfo, c: &Constraints) -> Option<String> {
    if let Some(r) = node.health.failure() {
        return Some(format!("failed ({r})"));
    }
    if node.unschedulable {
        return Some("cordoned".into());
    }
    if let Some((k, v)) = c
        .node_selector
        .iter()
        .find(|(k, v)| node.labels.get(*k) != Some(*v))
    {
        return Some(format!("does not match nodeSelector {k}={v}"));
    }
    if !matches_required_affinity(node, c.affinity.as_ref()) {
        return Some("does not match required node affinity".into());
    }
    if let Some(t) = node
        .taints
        .iter()
        .find(|t| blocks(t) && !c.tolerations.iter().any(|tol| tolerates(tol, t)))
    {
        return Some(format!("has untolerated taint {}", describe_taint(t)));
    }
    None
}

/// Taints the node lifecycle controller sets from node health (unreachable, not-ready). The operator judges
/// health itself (its grace, zones, a stale view), so these do not exclude a node: otherwise a node that comes
/// back after a disruption would shed its variants in the seconds before Kubernetes lifts the taint.
pub const HEALTH_TAINTS: [&str; 2] = [
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/not-ready",
];

fn blocks(t: &Taint) -> bool {
    (t.effect == "NoSchedule" || t.effect == "NoExecute")
        && !HEALTH_TAINTS.contains(&t.key.as_str())
}

fn describe_taint(t: &Taint) -> String {
    match &t.value {
        Some(v) if !v.is_empty() => format!("{}={}:{}", t.key, v, t.effect),
        _ => format!("{}:{}", t.key, t.effect),
    }
}

/// Kubernetes' toleration matching (ToleratesTaint).
pub fn tolerates(tol: &Toleration, t: &Taint) -> bool {
    if let Some(e) = tol.effect.as_deref().filter(|e| !e.is_empty())
        && e != t.effect
    {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or("");
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == t.key,
        "Equal" => {
            key == t.key && tol.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

fn matches_required_affinity(node: &NodeInfo, a: Option<&Affinity>) -> bool {
    let Some(sel) = a.and_then(|a| a.node_affinity.as_ref()).and_then(|n| {
        n.required_during_scheduling_ignored_during_execution
            .as_ref()
    }) else {
        return true;
    };
    // Terms are ORed; an empty term matches nothing (as in the scheduler).
    sel.node_selector_terms
        .iter()
        .any(|term| matches_term(node, term))
}

fn matches_term(node: &NodeInfo, term: &NodeSelectorTerm) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let name_fields = BTreeMap::from([("metadata.name".to_string(), node.name.clone())]);
    exprs.iter().all(|r| matches_requirement(&node.labels, r))
        && fields.iter().all(|r| matches_requirement(&name_fields, r))
}

fn matches_requirement(labels: &BTreeMap<String, String>, r: &NodeSelectorRequirement) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let have = labels.get(&r.key);
    let as_int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => have.is_some_and(|h| values.contains(h)),
        "NotIn" => have.is_none_or(|h| !values.contains(h)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" | "Lt" => {
            let (Some(h), Some(v)) = (
                have.and_then(|h| as_int(h)),
                values.first().and_then(|v| as_int(v)),
            ) else {
                return false;
            };
            if r.operator == "Gt" { h > v } else { h < v }
        }
        _ => false,
    }
}

/// Places the variants. Pure: same inputs, same answer (ties broken by name).
pub fn place(demands: &[Demand], nodes: &[NodeInfo], c: &Constraints) -> Placement {
    let mut out = Placement::default();
    let excluded: BTreeMap<&str, String> = nodes
        .iter()
        .filter_map(|n| exclusion(n, c).map(|why| (n.name.as_str(), why)))
        .collect();
    // Free capacity and this ensemble's count per eligible node.
    let mut free: BTreeMap<&str, (f64, f64, usize)> = nodes
        .iter()
        .filter(|n| !excluded.contains_key(n.name.as_str()))
        .map(|n| {
            (
                n.name.as_str(),
                (n.cpu - n.used_cpu, n.memory - n.used_memory, 0),
            )
        })
        .collect();
    let by_name: BTreeMap<&str, &NodeInfo> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();

    // 1. Keep serving variants where they are.
    let mut pending = Vec::new();
    for d in demands {
        match d
            .current
            .as_deref()
            .and_then(|cur| free.get_mut(cur).map(|f| (cur, f)))
        {
            Some((cur, f)) => {
                f.0 -= d.cpu;
                f.1 -= d.memory;
                f.2 += 1;
                out.assigned.insert(d.name.clone(), cur.to_string());
            }
            None => pending.push(d),
        }
    }

    // 2. Biggest first onto the best node.
    pending.sort_by(|a, b| b.weight.cmp(&a.weight).then_with(|| a.name.cmp(&b.name)));
    for d in pending {
        let fits = |name: &str, f: &(f64, f64, usize)| {
            f.0 + 1e-9 >= d.cpu && f.1 + 1e-9 >= d.memory && !name.is_empty()
        };
        let alloc_cpu = |name: &str| by_name.get(name).map_or(0.0, |n| n.cpu);
        let best = free
            .iter()
            .filter(|(name, f)| fits(name, f))
            .min_by(|(an, af), (bn, bf)| {
                let avoid_a = d.avoid.iter().any(|x| x == *an);
                let avoid_b = d.avoid.iter().any(|x| x == *bn);
                let spread = match c.strategy {
                    PlacementStrategy::OnePerNode => af.2.cmp(&bf.2),
                    PlacementStrategy::Packed => std::cmp::Ordering::Equal,
                };
                avoid_a
                    .cmp(&avoid_b)
                    .then(spread)
                    .then_with(|| alloc_cpu(bn).total_cmp(&alloc_cpu(an)))
                    .then_with(|| an.cmp(bn))
            })
            .map(|(name, _)| *name);
        match best {
            Some(name) => {
                if let Some(f) = free.get_mut(name) {
                    f.0 -= d.cpu;
                    f.1 -= d.memory;
                    f.2 += 1;
                }
                out.assigned.insert(d.name.clone(), name.to_string());
            }
            None => {
                out.unplaced
                    .insert(d.name.clone(), explain(d, nodes.len(), &excluded, &free));
            }
        }
    }
    out
}

/// "no node fits: 3 nodes: 1 failed (...), 2 too little free CPU/memory (needs 0.5 CPU, 128 MiB)".
fn explain(
    d: &Demand,
    total: usize,
    excluded: &BTreeMap<&str, String>,
    free: &BTreeMap<&str, (f64, f64, usize)>,
) -> String {
    if total == 0 {
        return "no nodes in the cluster".into();
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for why in excluded.values() {
        *counts.entry(why.clone()).or_default() += 1;
    }
    let short = free
        .values()
        .filter(|f| f.0 + 1e-9 < d.cpu || f.1 + 1e-9 < d.memory)
        .count();
    if short > 0 {
        counts.insert(
            format!(
                "too little free resources (needs {} CPU, {} MiB memory)",
                trim(d.cpu),
                trim(d.memory / 1048576.0)
            ),
            short,
        );
    }
    let parts: Vec<String> = counts.iter().map(|(why, n)| format!("{n} {why}")).collect();
    format!("no node fits: {total} node(s): {}", parts.join(", "))
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests;
