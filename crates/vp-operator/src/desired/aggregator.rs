//! The aggregator's objects: its config file (the data plane's own [`AggregatorConfig`] type, so a misspelt key
//! cannot be written), the ConfigMap that carries it with a copy of the manifest, the Deployment and the
//! Service. The pod template carries the [`config_digest`] of the ConfigMap's data (an annotation and the
//! aggregator's `--expect-config-digest`), so a config change rolls the Deployment and a new replica reports
//! ready only once it serves that config: which config a replica serves can then be read from its pod
//! (see [`CONFIG_DIGEST`]) even though the kubelet updates mounted ConfigMaps asynchronously.

use super::{
    BuildError, MANIFEST_KEY, aggregator_name, http_probe, http_service_port, non_empty,
    non_empty_map, object_meta, pod_security, server_container, variant_service_name,
    with_memory_budget,
};
use crate::config::{HTTP_PORT, OperatorConfig};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, Lifecycle, LifecycleHandler,
    PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec, Service, ServiceSpec, SleepAction,
    Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::path::PathBuf;
use vp_api::labels::{self, COMPONENT_AGGREGATOR};
use vp_api::{AggregatorConfig, EnsembleManifest, VariantEndpoint, VariantEnsemble, config_digest};

/// Key of the aggregator config in its ConfigMap.
pub const AGGREGATOR_CONFIG_KEY: &str = "aggregator.yaml";
/// Annotation on the aggregator's pod template (so on its pods): the digest of the config those pods serve
/// once Ready (their readiness probe fails until the aggregator has loaded exactly that config).
pub const CONFIG_DIGEST: &str = "vp.dev/config-digest";
/// Where the aggregator container mounts its ConfigMap.
const CONFIG_DIR: &str = "/etc/vp";
/// A config that sets only what has no default.
const MINIMAL_CONFIG: &str = "schema_version: 1\nmanifest: ensemble.yaml\nvariants: []\n";
/// How long a deleted aggregator replica keeps serving before it is told to stop (a `preStop` sleep): its pod
/// leaves the Service's endpoints when its deletion starts, but each node's kube-proxy drops it from its rules
/// only a moment later (a second or more on a busy node); until then connections still reach it. Without the
/// sleep they would be refused, on every rollout (a config change) and every drain.
pub const AGGREGATOR_DRAIN_S: i64 = 5;
/// Smallest weight of a variant in a weighted soft vote (the aggregator refuses weights that are not positive).
const MIN_WEIGHT: f64 = 1e-6;

fn in_range<T: TryFrom<i32>>(what: &str, v: i32) -> Result<T, BuildError> {
    T::try_from(v).map_err(|_| BuildError::Range(format!("{what} {v} is out of range")))
}

/// The aggregator config for this ensemble (format: docs/dataplane.md, schema version 1).
pub fn aggregator_config(
    ens: &VariantEnsemble,
    manifest: &EnsembleManifest,
) -> Result<AggregatorConfig, BuildError> {
    let ns = ens
        .namespace()
        .ok_or_else(|| BuildError::Metadata(ens.name_any()))?;
    let name = ens.name_any();
    let spec = &ens.spec;
    let weights: BTreeMap<String, f64> = if spec.combine.weighs_by_accuracy() {
        spec.variants
            .iter()
            .filter_map(|v| {
                manifest
                    .variant(&v.name)
                    .map(|m| (v.name.clone(), m.accuracy.max(MIN_WEIGHT)))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    // Settings the CRD does not expose (probe interval and timeout) keep the aggregator's own defaults, read
    // by the aggregator's reader from a config that sets nothing else.
    let defaults = AggregatorConfig::from_yaml(MINIMAL_CONFIG)
        .map_err(|e| BuildError::Range(format!("the aggregator's defaults: {e}")))?;
    Ok(AggregatorConfig {
        schema_version: 1,
        manifest: PathBuf::from(MANIFEST_KEY),
        model_name: Some(name.clone()),
        top_k: in_range("topK", spec.top_k)?,
        deadline_ms: in_range("deadlineMs", spec.aggregator.deadline_ms)?,
        min_variants: in_range("minVariants", spec.aggregator.min_variants)?,
        combine: spec.combine.into(),
        weights,
        variants: spec
            .variants
            .iter()
            .map(|v| VariantEndpoint {
                name: v.name.clone(),
                url: format!(
                    "http://{}.{ns}.svc:{HTTP_PORT}",
                    variant_service_name(&name, &v.name)
                ),
            })
            .collect(),
        ..defaults
    })
}

/// The aggregator ConfigMap: its config file and a copy of the manifest text, mounted as one folder.
pub fn aggregator_configmap(
    ens: &VariantEnsemble,
    manifest: &EnsembleManifest,
    manifest_text: &str,
) -> Result<ConfigMap, BuildError> {
    let config = serde_yaml::to_string(&aggregator_config(ens, manifest)?)?;
    Ok(ConfigMap {
        metadata: object_meta(
            ens,
            aggregator_name(&ens.name_any()),
            COMPONENT_AGGREGATOR,
            None,
        )?,
        data: Some(BTreeMap::from([
            (AGGREGATOR_CONFIG_KEY.to_string(), config),
            (MANIFEST_KEY.to_string(), manifest_text.to_string()),
        ])),
        ..ConfigMap::default()
    })
}

/// The digest of the config files in the aggregator ConfigMap, as the aggregator computes it from the files
/// it loads ([`config_digest`]).
pub fn configmap_digest(cm: &ConfigMap) -> String {
    let data = cm.data.as_ref();
    let file = |key: &str| {
        data.and_then(|d| d.get(key))
            .map_or(&[][..], |s| s.as_bytes())
    };
    config_digest(file(AGGREGATOR_CONFIG_KEY), file(MANIFEST_KEY))
}

/// The aggregator Deployment, whose replicas serve the config with digest `digest` (see [`CONFIG_DIGEST`]).
/// Its replicas prefer different nodes: one lost node must not take every aggregator with it.
pub fn aggregator_deployment(
    ens: &VariantEnsemble,
    cfg: &OperatorConfig,
    digest: &str,
) -> Result<Deployment, BuildError> {
    let name = ens.name_any();
    let spec = &ens.spec;
    let selector = labels::selector_labels(&name, COMPONENT_AGGREGATOR, None);
    let resources = spec
        .aggregator
        .resources
        .as_ref()
        .unwrap_or(&cfg.aggregator_resources);
    let config_path = format!("{CONFIG_DIR}/{AGGREGATOR_CONFIG_KEY}");
    let timeout = spec.aggregator.request_timeout_ms.map(|t| t.to_string());
    let mut args = vec![
        "--config",
        config_path.as_str(),
        "--expect-config-digest",
        digest,
    ];
    if let Some(t) = &timeout {
        args.extend(["--request-timeout-ms", t.as_str()]);
    }
    let container = Container {
        readiness_probe: http_probe("/v2/health/ready", 2, None, None),
        liveness_probe: http_probe("/v2/health/live", 10, None, None),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: AGGREGATOR_DRAIN_S,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(resources.clone()),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..server_container(
            "aggregator",
            spec.images
                .aggregator
                .clone()
                .unwrap_or_else(|| cfg.aggregator_image.clone()),
            spec.images.pull_policy.clone(),
            with_memory_budget(&args, resources),
        )
    };
    let pod_spec = PodSpec {
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        security_context: Some(pod_security()),
        containers: vec![container],
        volumes: Some(vec![Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: aggregator_name(&name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }]),
        affinity: Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(LabelSelector {
                                match_labels: Some(selector.clone()),
                                ..LabelSelector::default()
                            }),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..PodAffinityTerm::default()
                        },
                    },
                ]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        }),
        tolerations: non_empty(&spec.placement.tolerations),
        node_selector: non_empty_map(&spec.placement.node_selector),
        ..PodSpec::default()
    };
    Ok(Deployment {
        metadata: object_meta(ens, aggregator_name(&name), COMPONENT_AGGREGATOR, None)?,
        spec: DeploymentSpec {
            replicas: Some(spec.aggregator.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::object_labels(&name, COMPONENT_AGGREGATOR, None)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_DIGEST.to_string(),
                        digest.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    })
}

/// The aggregator Service (type and port from the spec).
pub fn aggregator_service(ens: &VariantEnsemble) -> Result<Service, BuildError> {
    let name = ens.name_any();
    let svc = &ens.spec.aggregator.service;
    Ok(Service {
        metadata: object_meta(ens, aggregator_name(&name), COMPONENT_AGGREGATOR, None)?,
        spec: Some(ServiceSpec {
            type_: Some(svc.type_.as_str().into()),
            selector: Some(labels::selector_labels(&name, COMPONENT_AGGREGATOR, None)),
            ports: Some(http_service_port(svc.port)),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}
