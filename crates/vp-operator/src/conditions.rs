//! Builds status conditions that keep their `lastTransitionTime` while their status does not change, so
//! `kubectl describe` shows when the ensemble really became Ready or Degraded, not when it was last reconciled.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use vp_api::ConditionType;

/// The condition `type_` with the given status, reason and message; its transition time is taken from `old`
/// when the status there is the same, else `now`.
pub fn condition(
    old: &[Condition],
    type_: ConditionType,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == type_.as_str() && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.as_str().into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Whether the condition of this type in `conds` is True.
pub fn is_true(conds: &[Condition], type_: ConditionType) -> bool {
    conds
        .iter()
        .any(|c| c.type_ == type_.as_str() && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().expect("time");
        let c0 = condition(
            &[],
            ConditionType::Ready,
            false,
            "Creating",
            "x".into(),
            Some(1),
            t0,
        );
        assert_eq!(c0.last_transition_time.0, t0);
        let c1 = condition(
            std::slice::from_ref(&c0),
            ConditionType::Ready,
            false,
            "Other",
            "y".into(),
            Some(2),
            t1,
        );
        assert_eq!(
            c1.last_transition_time.0, t0,
            "same status keeps the time, even with a new reason"
        );
        let c2 = condition(
            &[c1],
            ConditionType::Ready,
            true,
            "AllVariantsServing",
            "z".into(),
            Some(2),
            t1,
        );
        assert_eq!(
            (c2.last_transition_time.0, c2.status.as_str()),
            (t1, "True")
        );
        assert!(is_true(&[c2], ConditionType::Ready));
    }
}
