//! Prometheus metrics of the aggregator.

use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// All metrics of the aggregator, registered in their own registry.
pub struct Metrics {
    pub registry: Registry,
    /// End-to-end request handling time by endpoint (infer, classify).
    pub request_duration: HistogramVec,
    /// Requests by endpoint and outcome (ok, degraded, unavailable, client_error).
    pub requests: IntCounterVec,
    /// Replies per variant by outcome (ok, timeout, error).
    pub variant_replies: IntCounterVec,
    /// 1 while a variant passes its health probe.
    pub variant_up: IntGaugeVec,
    /// Number of configured variants currently up.
    pub available: IntGauge,
    /// Expected accuracy (manifest subset table, active k) of the variants currently up; 0 when none.
    pub expected_accuracy: Gauge,
    /// Answers given with fewer variants than configured.
    pub degraded: IntCounter,
    /// Config reloads by outcome (ok, error).
    pub reloads: IntCounterVec,
    /// Outlier ejections per variant.
    pub ejections: IntCounterVec,
    /// Requests refused with 503 because the aggregator was at capacity.
    pub shed: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let buckets = prometheus::exponential_buckets(0.000_05, 2.0, 16)?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "vp_aggregator_request_duration_seconds",
                "End-to-end request time",
            )
            .buckets(buckets),
            &["endpoint"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "vp_aggregator_requests_total",
                "Requests by endpoint and outcome",
            ),
            &["endpoint", "outcome"],
        )?;
        let variant_replies = IntCounterVec::new(
            Opts::new(
                "vp_aggregator_variant_replies_total",
                "Variant replies by outcome",
            ),
            &["variant", "outcome"],
        )?;
        let variant_up = IntGaugeVec::new(
            Opts::new(
                "vp_aggregator_variant_up",
                "1 while the variant passes its readiness probe",
            ),
            &["variant"],
        )?;
        let available = IntGauge::new(
            "vp_aggregator_available_variants",
            "Configured variants currently up",
        )?;
        let expected_accuracy = Gauge::new(
            "vp_aggregator_expected_accuracy",
            "Expected accuracy of the variants currently up at the configured k",
        )?;
        let degraded = IntCounter::new(
            "vp_aggregator_degraded_answers_total",
            "Answers combined from fewer variants than configured",
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "vp_aggregator_config_reloads_total",
                "Config file reloads by outcome",
            ),
            &["outcome"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "vp_aggregator_variant_ejections_total",
                "Times a variant was ejected after consecutive timeouts or errors",
            ),
            &["variant"],
        )?;
        let shed = IntCounter::new(
            "vp_aggregator_shed_requests_total",
            "Requests refused with 503 + Retry-After because the aggregator was at capacity",
        )?;
        registry.register(Box::new(ejections.clone()))?;
        registry.register(Box::new(shed.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(variant_replies.clone()))?;
        registry.register(Box::new(variant_up.clone()))?;
        registry.register(Box::new(available.clone()))?;
        registry.register(Box::new(expected_accuracy.clone()))?;
        registry.register(Box::new(degraded.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        Ok(Self {
            registry,
            request_duration,
            requests,
            variant_replies,
            variant_up,
            available,
            expected_accuracy,
            degraded,
            reloads,
            ejections,
            shed,
        })
    }
}
