//! Label keys, values and other names shared by the operator, the chart and the tests.
//!
//! Every object the operator creates carries the `app.kubernetes.io/*` recommended labels plus
//! `vp.dev/ensemble` and, for per-variant objects, `vp.dev/variant`. Selectors use only the `vp.dev/*` keys and
//! `app.kubernetes.io/component`, which never change for an object's life.

use std::collections::BTreeMap;

/// `app.kubernetes.io/name`: the application ("variant-parallel").
pub const NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the ensemble's name.
pub const INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: `variant` or `aggregator`.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/part-of`: always "variant-parallel".
pub const PART_OF: &str = "app.kubernetes.io/part-of";
/// `app.kubernetes.io/managed-by`: the operator.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `vp.dev/ensemble`: the owning ensemble's name.
pub const ENSEMBLE: &str = "vp.dev/ensemble";
/// `vp.dev/variant`: the variant's name (per-variant objects only).
pub const VARIANT: &str = "vp.dev/variant";

/// Value of `app.kubernetes.io/name` and `part-of`.
pub const APP: &str = "variant-parallel";
/// Value of `app.kubernetes.io/managed-by` and the server-side apply field manager.
pub const MANAGER: &str = "vp-operator";
/// Component value of variant pods and Services.
pub const COMPONENT_VARIANT: &str = "variant";
/// Component value of the aggregator Deployment, Service and ConfigMap.
pub const COMPONENT_AGGREGATOR: &str = "aggregator";

/// Annotation on a variant pod: the reason it was (re)created, for people reading `kubectl describe`.
pub const PLACEMENT_REASON: &str = "vp.dev/placement-reason";

/// Labels of an object belonging to `ensemble`; `variant` for per-variant objects.
pub fn object_labels(
    ensemble: &str,
    component: &str,
    variant: Option<&str>,
) -> BTreeMap<String, String> {
    let mut labels = selector_labels(ensemble, component, variant);
    labels.insert(NAME.into(), APP.into());
    labels.insert(INSTANCE.into(), ensemble.into());
    labels.insert(PART_OF.into(), APP.into());
    labels.insert(MANAGED_BY.into(), MANAGER.into());
    labels
}

/// The subset of [`object_labels`] used in selectors: stable for the object's whole life.
pub fn selector_labels(
    ensemble: &str,
    component: &str,
    variant: Option<&str>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(ENSEMBLE.into(), ensemble.into());
    labels.insert(COMPONENT.into(), component.into());
    if let Some(v) = variant {
        labels.insert(VARIANT.into(), v.into());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_labels_carry_recommended_and_own_keys() {
        let l = object_labels("fm", COMPONENT_VARIANT, Some("v0"));
        assert_eq!(l[ENSEMBLE], "fm");
        assert_eq!(l[VARIANT], "v0");
        assert_eq!(l[COMPONENT], "variant");
        assert_eq!(l[MANAGED_BY], "vp-operator");
        assert_eq!(l[INSTANCE], "fm");
        let s = selector_labels("fm", COMPONENT_VARIANT, Some("v0"));
        assert!(
            s.iter().all(|(k, v)| l.get(k) == Some(v)),
            "selector must be a subset of the labels"
        );
        assert!(!selector_labels("fm", COMPONENT_AGGREGATOR, None).contains_key(VARIANT));
    }
}
