//! Step 4 of a reconcile: carry the plan out. Deletes first (a failed node's pod must go before its
//! replacement appears), then server-side applies; independent objects go out concurrently, so a reconcile
//! costs about one round trip per kind, not per object (the aggregator config goes before its Deployment).

use crate::applied::ssa::{self, Live};
use crate::desired;
use crate::error::{Error, Result};
use crate::observe;
use crate::plan::Plan;
use crate::reconcile::Context;
use futures::future::try_join_all;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Deletes, then applies, what the plan says.
pub async fn apply(ctx: &Context, ns: &str, name: &str, plan: &Plan, live: &Live) -> Result<()> {
    delete(ctx, ns, name, plan).await?;
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
                ssa::apply_changed(client, &ctx.applied, &ctx.metrics, ns, &agg.service, live)
            )?;
        }
        Ok::<(), Error>(())
    };
    tokio::try_join!(pods, services, aggregator)?;
    Ok(())
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
        tracing::info!(pod = %d.name, namespace = ns, force = d.force, why = %d.why, "deleting variant pod");
        match pods.delete(&d.name, &params).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("deleting pod {ns}/{}", d.name), e)),
        }
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    for v in &plan.delete_services {
        let svc = desired::variant_service_name(name, v);
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
