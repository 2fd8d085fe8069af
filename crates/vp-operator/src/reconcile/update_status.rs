//! Step 5 of a reconcile: report. The status subresource (server-side apply, only when it changed), the plan's
//! Events on the ensemble, and the metrics of what happened (reschedules, failover latencies, availability).

use crate::applied::ssa::apply_params;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::reconcile::Context;
use kube::api::{Api, Patch};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use vp_api::{VariantEnsemble, VariantEnsembleStatus};

/// Longest Event note the API server accepts.
const MAX_NOTE_CHARS: usize = 1000;

/// The status patch: just enough for server-side apply.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusPatch<'a> {
    api_version: String,
    kind: &'static str,
    status: &'a VariantEnsembleStatus,
}

/// Writes the status, then records Events and metrics. When the status cannot be written, nothing is
/// recorded: the retry plans (and records) the same events again.
pub async fn update_status(
    ctx: &Context,
    ens: &VariantEnsemble,
    ns: &str,
    plan: &Plan,
) -> Result<()> {
    write_status(ctx, ens, ns, plan).await?;
    publish(ctx, ens, plan).await;
    record(ctx, ns, &ens.name_any(), plan);
    Ok(())
}

async fn write_status(ctx: &Context, ens: &VariantEnsemble, ns: &str, plan: &Plan) -> Result<()> {
    if ens.status.as_ref() == Some(&plan.status) {
        return Ok(());
    }
    ctx.gate
        .pass(|| format!("status {ns}/{}", ens.name_any()))?;
    let api: Api<VariantEnsemble> = Api::namespaced(ctx.client.clone(), ns);
    let patch = StatusPatch {
        api_version: VariantEnsemble::api_version(&()).into_owned(),
        kind: "VariantEnsemble",
        status: &plan.status,
    };
    api.patch_status(&ens.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await
        .map_err(|e| Error::kube("writing status", e))?;
    Ok(())
}

async fn publish(ctx: &Context, ens: &VariantEnsemble, plan: &Plan) {
    let reference = ens.object_ref(&());
    for note in &plan.events {
        if ctx
            .gate
            .pass(|| format!("event {} on {}", note.reason, ens.name_any()))
            .is_err()
        {
            return;
        }
        let ev = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.message.chars().take(MAX_NOTE_CHARS).collect()),
            action: note.action.into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, reason = note.reason, "cannot record event");
        }
    }
}

fn record(ctx: &Context, ns: &str, name: &str, plan: &Plan) {
    let m = &ctx.metrics;
    for r in &plan.reschedules {
        tracing::warn!(namespace = ns, ensemble = name, variant = %r.variant, reason = r.reason, from = ?r.from, to = ?r.to, "variant rescheduled");
        m.reschedules.with_label_values(&[r.reason]).inc();
    }
    for r in &plan.recovered {
        tracing::info!(namespace = ns, ensemble = name, variant = %r.variant, reason = %r.reason, seconds = r.after.as_secs_f64(), "replacement ready");
        m.failover
            .with_label_values(&[r.reason.as_str()])
            .observe(r.after.as_secs_f64());
    }
    let s = &plan.status;
    m.available
        .with_label_values(&[ns, name])
        .set(f64::from(s.available_variants));
    m.desired
        .with_label_values(&[ns, name])
        .set(f64::from(s.desired_variants));
    m.accuracy
        .with_label_values(&[ns, name])
        .set(s.expected_accuracy.unwrap_or(0.0));
}
