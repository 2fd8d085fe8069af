//! One reconcile of one ensemble, as a pipeline of small steps (the shape of Stackable's operators):
//! [`gather`] (async reads) -> [`validate`] (the spec against its manifest, pure) -> [`crate::plan`] (what to
//! do, pure) -> [`apply`] (deletes, then server-side applies) -> [`update_status`] (status subresource,
//! Events, metrics). `reconcile` and `error_policy` are plain functions, as in kube-rs/controller-rs.

pub mod apply;
pub mod gather;
pub mod update_status;
pub mod validate;

use crate::applied::Applied;
use crate::config::OperatorConfig;
use crate::error::{Error, Result};
use crate::failover::NodeView;
use crate::metrics::Metrics;
use crate::plan::{self, Inputs};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use vp_api::{ConditionType, VariantEnsemble};

/// Requeue period of a whole, healthy ensemble (picks up manifest ConfigMap edits and node label changes).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Requeue period while something is missing.
const RETRY_DEGRADED: Duration = Duration::from_secs(15);
/// Requeue period after a failed reconcile.
const RETRY_ERROR: Duration = Duration::from_secs(5);

/// What every reconcile shares.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Defaults.
    pub config: OperatorConfig,
    /// Metrics.
    pub metrics: Metrics,
    /// Event recorder.
    pub recorder: Recorder,
    /// Node liveness.
    pub nodes: Arc<NodeView>,
    /// All variant and aggregator pods managed by the operator (capacity used by other ensembles; which
    /// ensembles a failed node touches).
    pub pods: Store<Pod>,
    /// What was applied lately (skips applies that would change nothing; expires at the resync period).
    pub applied: Applied,
    /// Every write passes it (closed when leadership is lost).
    pub gate: crate::gate::Gate,
}

/// Reconciles one ensemble: gather, validate, plan, apply, update status.
pub async fn reconcile(ens: Arc<VariantEnsemble>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.duration.start_timer();
    ctx.metrics.reconciles.with_label_values::<&str>(&[]).inc();
    let name = ens.name_any();
    let ns = ens
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    if ens.metadata.deletion_timestamp.is_some() {
        // Owner references make the garbage collector remove everything; only our gauges remain to drop.
        ctx.metrics.forget_ensemble(&ns, &name);
        ctx.applied.forget_prefixed(&ns, &format!("{name}-"));
        return Ok(Action::await_change());
    }
    let seen = gather::gather(&ctx, &ens, &ns).await?;
    let manifest = seen
        .manifest
        .as_ref()
        .map(|(m, text)| (m, text.as_str()))
        .map_err(String::as_str);
    let plan = plan::plan(&Inputs {
        ensemble: &ens,
        valid: validate::validate(&ens, manifest, &ctx.config.host_path_prefixes),
        nodes: &seen.nodes,
        pods: &seen.pods,
        services: &seen.services,
        aggregator_pods: &seen.aggregator_pods,
        config: &ctx.config,
        now: Timestamp::now(),
    });
    let applied = apply::apply(&ctx, &ns, &name, &plan, &seen.live).await;
    update_status::update_status(&ctx, &ens, &ns, &plan).await?;
    applied?;
    // Whole: every variant serves and (through its Service) an aggregator on a live node answers.
    let whole = plan.status.available_variants == plan.status.desired_variants
        && plan
            .status
            .condition(ConditionType::Ready)
            .is_some_and(|c| c.status == "True");
    Ok(Action::requeue(if whole { RESYNC } else { RETRY_DEGRADED }))
}

/// Counts the failure and retries soon.
pub fn error_policy(ens: Arc<VariantEnsemble>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(ensemble = %ens.name_any(), namespace = ?ens.namespace(), error = %err, "reconcile failed");
    ctx.metrics.errors.with_label_values(&[err.label()]).inc();
    Action::requeue(RETRY_ERROR)
}
