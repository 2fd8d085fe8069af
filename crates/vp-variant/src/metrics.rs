//! Prometheus metrics of the variant server.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// All metrics of one variant server, registered in their own registry.
pub struct Metrics {
    pub registry: Registry,
    /// End-to-end handling time of infer requests, by outcome.
    pub request_duration: prometheus::HistogramVec,
    /// Infer requests by outcome (ok, client_error, server_error).
    pub requests: IntCounterVec,
    /// Time spent inside ONNX Runtime.
    pub inference_duration: Histogram,
    /// Infer requests refused with 503 because the server was full (in-flight and queue, or memory budget).
    pub shed: prometheus::IntCounter,
    /// 1 once warmed up.
    pub ready: IntGauge,
}

fn buckets() -> Vec<f64> {
    // 50 us .. ~1.6 s
    prometheus::exponential_buckets(0.000_05, 2.0, 16).unwrap_or_default()
}

impl Metrics {
    pub fn new(family: &str, variant: &str, sha256: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let request_duration = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "vp_variant_request_duration_seconds",
                "Infer request handling time",
            )
            .buckets(buckets()),
            &["outcome"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new("vp_variant_requests_total", "Infer requests by outcome"),
            &["outcome"],
        )?;
        let inference_duration = Histogram::with_opts(
            HistogramOpts::new(
                "vp_variant_inference_duration_seconds",
                "Time inside ONNX Runtime per request",
            )
            .buckets(buckets()),
        )?;
        let shed = prometheus::IntCounter::new(
            "vp_variant_shed_requests_total",
            "Infer requests refused with 503 + Retry-After because the server was at capacity",
        )?;
        let ready = IntGauge::new(
            "vp_variant_ready",
            "1 when the model is loaded and warmed up",
        )?;
        let info = IntGaugeVec::new(
            Opts::new(
                "vp_variant_model_info",
                "The served model (value is always 1)",
            ),
            &["family", "variant", "sha256"],
        )?;
        info.with_label_values(&[family, variant, sha256]).set(1);
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(inference_duration.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        registry.register(Box::new(shed.clone()))?;
        registry.register(Box::new(info))?;
        Ok(Self {
            registry,
            request_duration,
            requests,
            inference_duration,
            shed,
            ready,
        })
    }
}
