//! The ensemble's status summary and its three standard conditions (Ready, Degraded, Progressing, with
//! transition times kept by [`crate::conditions`]), the Degraded/Recovered events, and the status of a spec
//! that cannot be carried out.

use super::served::AggregatorServing;
use super::variants::VariantsOutcome;
use super::{Inputs, Note, Plan};
use crate::conditions::{condition, is_true};
use crate::desired;
use jiff::Timestamp;
use vp_api::{ConditionType, EnsembleManifest, VariantEnsembleStatus};

/// Degraded and Progressing reason (and Event reason) while variants are not moved because moves are paused.
pub const MOVES_PAUSED: &str = "MovesPaused";
/// How a pause reads in a hold's message ([`crate::health::Hold`]).
const PAUSED: &str = "moves paused";

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Fills in the summary and conditions of `out.status` (whose per-variant entries are already there) and the
/// events of a Degraded transition.
pub fn summarise(
    input: &Inputs<'_>,
    manifest: &EnsembleManifest,
    old: &VariantEnsembleStatus,
    variants: &VariantsOutcome,
    aggregators: AggregatorServing,
    out: &mut Plan,
) {
    let ens = input.ensemble;
    let generation = ens.metadata.generation;
    let desired_n = ens.spec.variants.len();
    let available = variants.ready.len();
    let k = usize::try_from(ens.spec.top_k).unwrap_or(0);
    let st = &mut out.status;
    st.observed_generation = generation;
    st.desired_variants = count(desired_n);
    st.available_variants = count(available);
    st.expected_accuracy = manifest.subset_accuracy(variants.ready.iter().map(String::as_str), k);
    st.aggregator_endpoint = desired::aggregator_endpoint(ens);
    let no_aggregator = ens.spec.aggregator.replicas == 0;
    // Some replica answers (whichever config it serves), and: every serving replica serves the current config.
    let agg_up = no_aggregator || aggregators.any();
    let agg_ok = no_aggregator
        || (aggregators.current > 0 && aggregators.stale == 0 && aggregators.leaving == 0);
    let missing: Vec<String> = st
        .variants
        .iter()
        .filter(|v| !v.ready)
        .map(|v| {
            format!(
                "{} ({})",
                v.name,
                v.message.as_deref().unwrap_or("not ready")
            )
        })
        .collect();
    let all = available == desired_n;
    let digest = out.aggregator.as_ref().map_or("", |a| a.digest.as_str());
    let (ready_reason, ready_msg) = match (all, agg_up, agg_ok) {
        (true, _, true) => (
            "AllVariantsServing",
            format!("{available}/{desired_n} variants serving"),
        ),
        (true, false, _) => (
            "AggregatorUnavailable",
            match &out.aggregator_held {
                Some(why) => format!("no aggregator replica is ready; {why}"),
                None => "no aggregator replica is ready".to_string(),
            },
        ),
        (true, true, false) => (
            "AggregatorConfigStale",
            format!(
                "{} aggregator replica(s) serve an older config, {} the current one ({}){}",
                aggregators.stale + aggregators.leaving,
                aggregators.current,
                digest.get(..12).unwrap_or(digest),
                out.aggregator_held
                    .as_deref()
                    .map(|why| format!("; {why}"))
                    .unwrap_or_default()
            ),
        ),
        (false, _, _) => (
            "VariantsUnavailable",
            format!(
                "{available}/{desired_n} variants serving; not serving: {}",
                missing.join("; ")
            ),
        ),
    };
    let degraded = !all || !agg_up;
    // Moves paused (a disrupted zone or a stale view): the variants left where they are say why.
    let paused = !variants.paused.is_empty()
        || out
            .aggregator_held
            .as_deref()
            .is_some_and(|w| w.contains(PAUSED));
    let (deg_reason, deg_msg) = if paused {
        (
            MOVES_PAUSED,
            format!(
                "{ready_msg}; {}",
                if variants.paused.is_empty() {
                    out.aggregator_held.clone().unwrap_or_default()
                } else {
                    variants.paused.join("; ")
                }
            ),
        )
    } else if available == 0 {
        ("NoVariantServing", ready_msg.clone())
    } else if i64::try_from(available).unwrap_or(0) < i64::from(ens.spec.aggregator.min_variants) {
        (
            "BelowMinVariants",
            format!(
                "{ready_msg}; fewer than minVariants {}",
                ens.spec.aggregator.min_variants
            ),
        )
    } else if degraded {
        (ready_reason, ready_msg.clone())
    } else {
        (
            "AllVariantsServing",
            format!("{available}/{desired_n} variants serving"),
        )
    };
    let busy = !out.create.is_empty() || !out.delete.is_empty() || variants.starting > 0 || !agg_ok;
    let (prog_reason, prog_msg) = if paused {
        (MOVES_PAUSED, deg_msg.clone())
    } else if !out.reschedules.is_empty() {
        (
            "Rescheduling",
            format!(
                "moving {} variant(s) off failed nodes or pods",
                out.reschedules.len()
            ),
        )
    } else if agg_up && !agg_ok {
        (
            "AggregatorRollout",
            "aggregator replicas are moving to the current config".to_string(),
        )
    } else if busy {
        (
            "Reconciling",
            format!(
                "{} pod(s) to create, {} to delete, {} starting",
                out.create.len(),
                out.delete.len(),
                variants.starting
            ),
        )
    } else {
        ("Stable", "every object is up to date".to_string())
    };
    let now = input.now;
    let st = &mut out.status;
    st.conditions = vec![
        condition(
            &old.conditions,
            ConditionType::Ready,
            all && agg_ok,
            ready_reason,
            ready_msg,
            generation,
            now,
        ),
        condition(
            &old.conditions,
            ConditionType::Degraded,
            degraded,
            deg_reason,
            deg_msg.clone(),
            generation,
            now,
        ),
        condition(
            &old.conditions,
            ConditionType::Progressing,
            busy,
            prog_reason,
            prog_msg,
            generation,
            now,
        ),
    ];
    let was_paused = old
        .condition(ConditionType::Degraded)
        .is_some_and(|c| c.reason == MOVES_PAUSED);
    if paused && !was_paused {
        out.events.push(Note {
            warning: true,
            reason: MOVES_PAUSED,
            action: "Pause",
            message: deg_msg.clone(),
        });
    } else if was_paused && !paused {
        out.events.push(Note {
            warning: false,
            reason: "MovesResumed",
            action: "Resume",
            message: "moves resumed: the view is healthy again".into(),
        });
    }
    let was_degraded = is_true(&old.conditions, ConditionType::Degraded);
    if degraded && !was_degraded && old.observed_generation.is_some() {
        out.events.push(Note {
            warning: true,
            reason: "Degraded",
            action: "Observe",
            message: deg_msg,
        });
    } else if !degraded && was_degraded {
        out.events.push(Note {
            warning: false,
            reason: "Recovered",
            action: "Observe",
            message: format!("{available}/{desired_n} variants serving again"),
        });
    }
}

/// Marks the status of a plan whose apply failed: Ready False with reason `ApplyFailed` and the error (a
/// generation counts as served only once everything it needs is applied), Progressing True with the same
/// reason (the reconcile is retried); Degraded stays what the plan saw, since what serves did not change. A
/// Warning Event `ApplyFailed` is recorded once per new error.
pub fn apply_failed(old: &VariantEnsembleStatus, error: &str, now: Timestamp, out: &mut Plan) {
    let generation = out.status.observed_generation;
    let message = format!("applying this generation failed: {error}");
    for (t, on) in [
        (ConditionType::Ready, false),
        (ConditionType::Progressing, true),
    ] {
        let c = condition(
            &old.conditions,
            t,
            on,
            "ApplyFailed",
            message.clone(),
            generation,
            now,
        );
        match out
            .status
            .conditions
            .iter_mut()
            .find(|x| x.type_ == t.as_str())
        {
            Some(x) => *x = c,
            None => out.status.conditions.push(c),
        }
    }
    let before = old
        .condition(ConditionType::Ready)
        .map(|c| (c.reason.as_str(), c.message.as_str()));
    if before != Some(("ApplyFailed", message.as_str())) {
        out.events.push(Note {
            warning: true,
            reason: "ApplyFailed",
            action: "Apply",
            message,
        });
    }
}

/// The plan for a spec that cannot be carried out: touch nothing, say why (one event per new reason).
pub fn invalid(input: &Inputs<'_>, old: &VariantEnsembleStatus, why: String) -> Plan {
    let ens = input.ensemble;
    let g = ens.metadata.generation;
    let now = input.now;
    let mut status = old.clone();
    status.observed_generation = g;
    status.desired_variants = count(ens.spec.variants.len());
    status.conditions = [
        (ConditionType::Ready, false),
        (ConditionType::Degraded, true),
        (ConditionType::Progressing, false),
    ]
    .into_iter()
    .map(|(t, on)| condition(&old.conditions, t, on, "InvalidSpec", why.clone(), g, now))
    .collect();
    let before = old
        .condition(ConditionType::Ready)
        .map(|c| (c.reason.as_str(), c.message.as_str()));
    let events = if before == Some(("InvalidSpec", why.as_str())) {
        vec![]
    } else {
        vec![Note {
            warning: true,
            reason: "InvalidSpec",
            action: "Validate",
            message: why,
        }]
    };
    Plan {
        status,
        events,
        ..Plan::default()
    }
}
