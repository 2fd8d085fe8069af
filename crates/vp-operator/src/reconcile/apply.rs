//! Step 4 of a reconcile: carry the plan out. Deletes first (a failed node's pod must go before its
//! replacement appears), then server-side applies, then removes protection objects no longer wanted
//! (NetworkPolicies switched off, a budget for one replica); independent objects go out concurrently, so a
//! reconcile costs about one round trip per kind, not per object (the aggregator config goes before its
//! Deployment).

use crate::applied::ssa::{self, Live};
use crate::desired;
use crate::error::{Error, Result};
use crate::observe;
use crate::plan::Plan;
use crate::reconcile::Context;
use futures::future::try_join_all;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Deletes, then applies, what the plan says.
pub async fn apply(ctx: &Context, ns: &str, name: &str, plan: &Plan, live: &Live) -> Result<()> {
    delete(ctx, ns, name, plan).await?;
    ctx.gate.pass(|| format!("apply {ns}/{name}"))?;
    let client = &ctx.client;
    for pod in &plan.create {
        tracing::info!(pod = %pod.name_any(), namespace = ns, node = ?observe::pod_node(pod), "creating variant pod");
    }
    let changed = |obj| ssa::apply_changed(client, &ctx.applied, &ctx.metrics, ns, obj, live);
    let pods = try_join_all(plan.create.iter().map(|p| ssa::apply(client, ns, p)));
    let services = try_join_all(plan.services.iter().map(changed));
    let aggregator = async {
        if let Some(agg) = &plan.aggregator {
            // The config first: a Deployment whose template expects a config digest that was never written
            // would roll out replicas that can never turn ready.
            ssa::apply_changed(client, &ctx.applied, &ctx.metrics, ns, &agg.configmap, live)
                .await?;
            tokio::try_join!(
                ssa::apply_changed(
                    client,
                    &ctx.applied,
                    &ctx.metrics,
                    ns,
                    &agg.deployment,
                    live
                ),
                ssa::apply_changed(client, &ctx.applied, &ctx.metrics, ns, &agg.service, live),
                try_join_all(agg.network_policies.iter().map(|p| ssa::apply_changed(
                    client,
                    &ctx.applied,
                    &ctx.metrics,
                    ns,
                    p,
                    live
                ))),
                async {
                    match &agg.disruption_budget {
                        Some(b) => {
                            ssa::apply_changed(client, &ctx.applied, &ctx.metrics, ns, b, live)
                                .await
                        }
                        None => Ok(()),
                    }
                }
            )?;
        }
        Ok::<(), Error>(())
    };
    tokio::try_join!(pods, services, aggregator)?;
    delete_unwanted(ctx, ns, plan, live).await
}

/// Deletes the plan's pods (force where it says so) and the Services of removed variants; already gone is
/// fine.
async fn delete(ctx: &Context, ns: &str, name: &str, plan: &Plan) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    for d in &plan.delete {
        let params = DeleteParams {
            grace_period_seconds: d.force.then_some(0),
            ..DeleteParams::default()
        };
        ctx.gate.pass(|| format!("delete pod {ns}/{}", d.name))?;
        tracing::info!(pod = %d.name, namespace = ns, force = d.force, why = %d.why, "deleting pod");
        match pods.delete(&d.name, &params).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("deleting pod {ns}/{}", d.name), e)),
        }
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    for v in &plan.delete_services {
        let svc = desired::variant_service_name(name, v);
        ctx.gate.pass(|| format!("delete service {ns}/{svc}"))?;
        ctx.applied
            .forget(&("Service", ns.to_string(), svc.clone()));
        match services.delete(&svc, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("deleting service {ns}/{svc}"), e)),
        }
    }
    Ok(())
}

/// Deletes the NetworkPolicies and PodDisruptionBudget that exist (per the gather step) but are no longer
/// wanted: policies switched off in the operator, the budget when replicas dropped to one.
async fn delete_unwanted(ctx: &Context, ns: &str, plan: &Plan, live: &Live) -> Result<()> {
    let Some(agg) = &plan.aggregator else {
        return Ok(());
    };
    let wanted: Vec<(&str, String)> = agg
        .network_policies
        .iter()
        .map(|p| ("NetworkPolicy", p.name_any()))
        .chain(
            agg.disruption_budget
                .iter()
                .map(|b| ("PodDisruptionBudget", b.name_any())),
        )
        .collect();
    for (kind, name) in live.keys() {
        if !matches!(*kind, "NetworkPolicy" | "PodDisruptionBudget")
            || wanted.iter().any(|(k, n)| k == kind && n == name)
        {
            continue;
        }
        ctx.applied.forget(&(kind, ns.to_string(), name.clone()));
        let done = if *kind == "NetworkPolicy" {
            Api::<NetworkPolicy>::namespaced(ctx.client.clone(), ns)
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ())
        } else {
            Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), ns)
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ())
        };
        match done {
            Ok(()) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("deleting {kind} {ns}/{name}"), e)),
        }
    }
    Ok(())
}
