//! Prometheus metrics of the operator (served on /metrics). Names follow the project's rules: prefix `vp_`,
//! base units, counters end in `_total`, latencies are histograms.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: IntCounterVec,
    /// Reconciles that failed, by error label.
    pub errors: IntCounterVec,
    /// Reconcile wall time.
    pub duration: Histogram,
    /// Server-side applies of Services and aggregator objects, by result (applied, skipped, failed).
    pub applies: IntCounterVec,
    /// Variants moved or replaced, by reason.
    pub reschedules: IntCounterVec,
    /// Node failures detected, by reason.
    pub node_failures: IntCounterVec,
    /// From a node's last lease renewal to the operator declaring it failed.
    pub detection: Histogram,
    /// From a failure's start (last renewal, or detection for other causes) to the replacement pod Ready.
    pub failover: HistogramVec,
    /// Variants serving now, per ensemble.
    pub available: GaugeVec,
    /// Variants in the spec, per ensemble.
    pub desired: GaugeVec,
    /// Expected accuracy of the serving variants, per ensemble.
    pub accuracy: GaugeVec,
    /// 1 while this replica leads.
    pub leader: IntGauge,
    /// Per zone: 0 Normal, 1 PartialDisruption, 2 FullDisruption.
    pub disruption: IntGaugeVec,
    /// 1 while moves are paused somewhere (a disrupted zone or a stale view).
    pub moves_paused: IntGauge,
    /// 1 while the operator's view is stale.
    pub view_stale: IntGauge,
}

impl Metrics {
    /// Creates and registers the metrics in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let latency = vec![
            0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0,
        ];
        let ens = &["namespace", "ensemble"];
        let m = Self {
            reconciles: IntCounterVec::new(Opts::new("vp_operator_reconciles_total", "Reconciles run"), &[])?,
            errors: IntCounterVec::new(
                Opts::new("vp_operator_reconcile_errors_total", "Reconciles that failed, by error"),
                &["error"],
            )?,
            duration: Histogram::with_opts(
                HistogramOpts::new("vp_operator_reconcile_duration_seconds", "Reconcile wall time")
                    .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )?,
            applies: IntCounterVec::new(
                Opts::new(
                    "vp_operator_applies_total",
                    "Server-side applies of Services and aggregator objects, by result (applied, skipped: unchanged, failed)",
                ),
                &["result"],
            )?,
            reschedules: IntCounterVec::new(
                Opts::new("vp_operator_reschedules_total", "Variants moved or replaced because of a failure, by reason"),
                &["reason"],
            )?,
            node_failures: IntCounterVec::new(
                Opts::new("vp_operator_node_failures_total", "Node failures detected, by reason"),
                &["reason"],
            )?,
            detection: Histogram::with_opts(
                HistogramOpts::new(
                    "vp_operator_node_failure_detection_seconds",
                    "Time from a node's last lease renewal to the operator declaring it failed",
                )
                .buckets(latency.clone()),
            )?,
            failover: HistogramVec::new(
                HistogramOpts::new(
                    "vp_operator_failover_seconds",
                    "Time from a failure's start (the node's last lease renewal) to the replacement pod being Ready",
                )
                .buckets(latency),
                &["reason"],
            )?,
            available: GaugeVec::new(Opts::new("vp_ensemble_available_variants", "Variants serving now"), ens)?,
            desired: GaugeVec::new(Opts::new("vp_ensemble_desired_variants", "Variants in the spec"), ens)?,
            accuracy: GaugeVec::new(
                Opts::new("vp_ensemble_expected_accuracy", "Expected top-1 accuracy of the serving variants (0..1)"),
                ens,
            )?,
            leader: IntGauge::new("vp_operator_leader", "1 while this replica is the leader")?,
            disruption: IntGaugeVec::new(
                Opts::new(
                    "vp_operator_disruption_state",
                    "Zone state: 0 Normal, 1 PartialDisruption, 2 FullDisruption (no variant moves off its nodes)",
                ),
                &["zone"],
            )?,
            moves_paused: IntGauge::new(
                "vp_operator_moves_paused",
                "1 while variant moves are paused somewhere (a disrupted zone or a stale view)",
            )?,
            view_stale: IntGauge::new(
                "vp_operator_view_stale",
                "1 while the API server does not answer the operator or its node Lease watch is silent",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.reconciles.clone()))?;
        m.registry.register(Box::new(m.errors.clone()))?;
        m.registry.register(Box::new(m.duration.clone()))?;
        m.registry.register(Box::new(m.applies.clone()))?;
        m.registry.register(Box::new(m.reschedules.clone()))?;
        m.registry.register(Box::new(m.node_failures.clone()))?;
        m.registry.register(Box::new(m.detection.clone()))?;
        m.registry.register(Box::new(m.failover.clone()))?;
        m.registry.register(Box::new(m.available.clone()))?;
        m.registry.register(Box::new(m.desired.clone()))?;
        m.registry.register(Box::new(m.accuracy.clone()))?;
        m.registry.register(Box::new(m.leader.clone()))?;
        m.registry.register(Box::new(m.disruption.clone()))?;
        m.registry.register(Box::new(m.moves_paused.clone()))?;
        m.registry.register(Box::new(m.view_stale.clone()))?;
        m.reconciles.with_label_values::<&str>(&[]).inc_by(0);
        Ok(m)
    }

    /// The registry holding every metric (what /metrics encodes).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Removes an ensemble's gauges (it was deleted).
    pub fn forget_ensemble(&self, namespace: &str, name: &str) {
        for g in [&self.available, &self.desired, &self.accuracy] {
            let _ = g.remove_label_values(&[namespace, name]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_all_families_with_project_names() {
        let m = Metrics::new().expect("metrics");
        m.reschedules.with_label_values(&["LeaseExpired"]).inc();
        m.available.with_label_values(&["edge", "fm"]).set(3.0);
        m.failover
            .with_label_values(&["LeaseExpired"])
            .observe(23.0);
        m.disruption.with_label_values(&["site-a"]).set(2);
        m.moves_paused.set(1);
        let text = m.render();
        for name in [
            "vp_operator_reconciles_total",
            "vp_operator_reschedules_total{reason=\"LeaseExpired\"} 1",
            "vp_ensemble_available_variants{ensemble=\"fm\",namespace=\"edge\"} 3",
            "vp_operator_failover_seconds_bucket{reason=\"LeaseExpired\",le=\"25\"} 1",
            "vp_operator_disruption_state{zone=\"site-a\"} 2",
            "vp_operator_moves_paused 1",
            "vp_operator_view_stale 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        m.forget_ensemble("edge", "fm");
        assert!(!m.render().contains("ensemble=\"fm\""));
    }
}
