//! A variant's Pod (pinned to its node, named after node and template so that a reconcile is idempotent) and its
//! stable Service (what the aggregator config points at). The pod template is built once per variant and
//! reconcile ([`VariantTemplate`]); its hash spots outdated pods. k is not part of it: the aggregator sends k
//! with every request, so a topK change reloads the aggregator config and restarts no variant.

use super::{
    BuildError, MANIFEST_KEY, container_security, http_probe, http_service_port, non_empty,
    object_meta, pod_security, server_container, variant_service_name, with_memory_budget,
};
use crate::config::{HTTP_PORT, OperatorConfig};
use crate::hash;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, HostPathVolumeSource,
    KeyToPath, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Service, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use std::collections::BTreeMap;
use vp_api::labels::{self, COMPONENT_VARIANT};
use vp_api::manifest::ManifestVariant;
use vp_api::{VARIANT_REQUEST_TIMEOUT_MS, VariantEnsemble, VariantSourceKind, VariantSpec};

/// Annotation holding the hash of a variant pod's template (everything but the node), to spot outdated pods.
pub const TEMPLATE_HASH: &str = "vp.dev/template-hash";
/// Annotation on a replacement pod: when the failure that caused it began (RFC 3339), for the
/// failure-to-replacement-ready latency metric.
pub const FAILED_SINCE: &str = "vp.dev/failed-since";
/// Annotation on a replacement pod: the metric label of the failure that caused it (e.g. LeaseExpired).
pub const FAILURE_REASON: &str = "vp.dev/failure-reason";
/// Where the variant container finds the manifest and its model file.
const VARIANT_DIR: &str = "/vp";

/// The URL source's init container script: download to a temporary name, check the sha256, and only then give
/// the file its real name, so the variant never sees a partial or unverified model. URL, digest, file name,
/// folder, size and time limits come from the environment (`MODEL_URL`, `MODEL_SHA256`, `FILE`, `DIR`,
/// `MAX_BYTES`, `MAX_SECONDS`), never spliced into the text.
///
/// Bounds: curl stops after `MAX_SECONDS` in all (retries included) and refuses a body whose announced length
/// is over `MAX_BYTES` (the manifest's size); a body without a length, or a server that lies about it, is
/// stopped by the shell's file-size limit a block past `MAX_BYTES`, so the download can never use more disk
/// than the model. Each failure ends with one line saying which limit was hit and empties the partial file.
/// Needs only `sh`, `curl`, `sha256sum` and `mv` in the image (everything else is a shell builtin).
pub const FETCH_SCRIPT: &str = r#"set -u
part="$DIR/$FILE.part"
fail() { echo "fetch-model: $*" >&2; : >"$part"; exit 1; }
size=$(ulimit -f $((MAX_BYTES / 512 + 2)) && exec curl -fsSL --proto =http,https --retry 3 --connect-timeout 10 \
  --max-time "$MAX_SECONDS" --retry-max-time "$MAX_SECONDS" --max-filesize "$MAX_BYTES" \
  -w '%{size_download}' -o "$part" "$MODEL_URL")
rc=$?
case $rc in
  0) ;;
  28) fail "downloading $MODEL_URL took longer than $MAX_SECONDS s (the operator's --fetch-timeout-seconds)" ;;
  63|23|153) fail "$MODEL_URL is larger than the manifest's $MAX_BYTES bytes" ;;
  *) fail "downloading $MODEL_URL failed (curl exit code $rc)" ;;
esac
[ "$size" -le "$MAX_BYTES" ] || fail "$MODEL_URL is larger than the manifest's $MAX_BYTES bytes"
echo "$MODEL_SHA256  $part" | sha256sum -c - >/dev/null 2>&1 ||
  fail "$MODEL_URL ($size bytes) does not have the manifest's sha256 $MODEL_SHA256"
mv "$part" "$DIR/$FILE"
"#;

/// Room in the URL source's emptyDir beyond the model itself (the filesystem's own blocks).
const FETCH_SLACK_BYTES: u64 = 1 << 20;

/// A variant's pod spec without its node, and the hash of it. The pod name is derived from node and hash, so
/// the same variant on the same node with the same template always has the same name.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantTemplate {
    /// The pod spec (no `nodeName`).
    pub spec: PodSpec,
    /// 8 base-36 characters of its hash.
    pub hash: String,
}

/// What a replacement pod records about the failure that caused it (see [`FAILED_SINCE`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Replacement<'a> {
    /// When the failure began.
    pub failed_since: Timestamp,
    /// Its metric label.
    pub reason: &'a str,
}

fn plain_file_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str, sub_path: Option<&str>) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        sub_path: sub_path.map(str::to_string),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn config_map_volume(name: &str, config_map: &str, key: &str, path: &str) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            items: Some(vec![KeyToPath {
                key: key.into(),
                path: path.into(),
                ..KeyToPath::default()
            }]),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The model volume, its mount in the variant container, and the init container that fetches it (URL source).
fn model_source(
    v: &VariantSpec,
    mv: &ManifestVariant,
    cfg: &OperatorConfig,
) -> Result<(Volume, VolumeMount, Option<Container>), BuildError> {
    let model_path = format!("{VARIANT_DIR}/{}", mv.file);
    let file = Some(mv.file.as_str());
    let volume = |v: Volume| Volume {
        name: "model".into(),
        ..v
    };
    Ok(
        match v
            .source
            .kind()
            .ok_or_else(|| BuildError::Source(v.name.clone()))?
        {
            VariantSourceKind::ConfigMap(cm) => (
                config_map_volume("model", &cm.name, &cm.key, &mv.file),
                mount("model", &model_path, file),
                None,
            ),
            VariantSourceKind::HostPath(path) => (
                volume(Volume {
                    host_path: Some(HostPathVolumeSource {
                        path: path.to_string(),
                        type_: Some("File".into()),
                    }),
                    ..Volume::default()
                }),
                mount("model", &model_path, None),
                None,
            ),
            VariantSourceKind::Pvc(pvc) => (
                volume(Volume {
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: pvc.claim_name.clone(),
                        read_only: Some(true),
                    }),
                    ..Volume::default()
                }),
                mount("model", &model_path, Some(&pvc.path)),
                None,
            ),
            VariantSourceKind::Url(u) => (
                volume(Volume {
                    empty_dir: Some(EmptyDirVolumeSource {
                        size_limit: Some(Quantity(
                            mv.bytes.saturating_add(FETCH_SLACK_BYTES).to_string(),
                        )),
                        ..EmptyDirVolumeSource::default()
                    }),
                    ..Volume::default()
                }),
                mount("model", &model_path, file),
                // URL and digest travel as environment variables, never spliced into the script.
                Some(Container {
                    name: "fetch-model".into(),
                    image: Some(cfg.fetch_image.clone()),
                    command: Some(vec!["sh".into(), "-c".into(), FETCH_SCRIPT.into()]),
                    env: Some(vec![
                        env("MODEL_URL", &u.url),
                        env("MODEL_SHA256", &u.sha256),
                        env("FILE", &mv.file),
                        env("DIR", "/work"),
                        env("MAX_BYTES", &mv.bytes.to_string()),
                        env("MAX_SECONDS", &cfg.fetch_timeout_seconds.to_string()),
                    ]),
                    volume_mounts: Some(vec![VolumeMount {
                        name: "model".into(),
                        mount_path: "/work".into(),
                        ..VolumeMount::default()
                    }]),
                    security_context: Some(container_security()),
                    resources: Some(cfg.variant_resources.clone()),
                    ..Container::default()
                }),
            ),
        },
    )
}

/// The pod template of variant `v` for this spec, and its hash (changes when anything but the node would).
pub fn variant_template(
    ens: &VariantEnsemble,
    v: &VariantSpec,
    mv: &ManifestVariant,
    cfg: &OperatorConfig,
) -> Result<VariantTemplate, BuildError> {
    let spec = &ens.spec;
    if !plain_file_name(&mv.file) {
        return Err(BuildError::FileName(v.name.clone(), mv.file.clone()));
    }
    let (model_volume, model_mount, init) = model_source(v, mv, cfg)?;
    let manifest = &spec.model.manifest;
    let resources = v
        .resources
        .as_ref()
        .or(spec.resources.as_ref())
        .unwrap_or(&cfg.variant_resources);
    let container = Container {
        readiness_probe: http_probe("/v2/health/ready", 2, Some(1), Some(1)),
        liveness_probe: http_probe("/v2/health/live", 10, Some(3), Some(1)),
        resources: Some(resources.clone()),
        volume_mounts: Some(vec![
            mount(
                "manifest",
                &format!("{VARIANT_DIR}/{MANIFEST_KEY}"),
                Some(MANIFEST_KEY),
            ),
            model_mount,
        ]),
        ..server_container(
            "variant",
            spec.images
                .variant
                .clone()
                .unwrap_or_else(|| cfg.variant_image.clone()),
            spec.images.pull_policy.clone(),
            with_memory_budget(
                &[
                    "--manifest",
                    &format!("{VARIANT_DIR}/{MANIFEST_KEY}"),
                    "--variant",
                    &v.name,
                    "--request-timeout-ms",
                    &VARIANT_REQUEST_TIMEOUT_MS.to_string(),
                ],
                resources,
            ),
        )
    };
    let pod_spec = PodSpec {
        restart_policy: Some("Always".into()),
        termination_grace_period_seconds: Some(10),
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        security_context: Some(pod_security()),
        volumes: Some(vec![
            config_map_volume(
                "manifest",
                &manifest.config_map,
                &manifest.key,
                MANIFEST_KEY,
            ),
            model_volume,
        ]),
        init_containers: init.map(|c| vec![c]),
        containers: vec![container],
        tolerations: non_empty(&spec.placement.tolerations),
        ..PodSpec::default()
    };
    let bytes = serde_json::to_vec(&pod_spec).map_err(|e| BuildError::Hash(v.name.clone(), e))?;
    Ok(VariantTemplate {
        spec: pod_spec,
        hash: hash::short(&bytes, 8),
    })
}

/// Name of the variant's pod on `node` with template hash `template`.
pub fn variant_pod_name(ensemble: &str, variant: &str, node: &str, template: &str) -> String {
    format!(
        "{ensemble}-{variant}-{}",
        hash::short(format!("{node}/{template}").as_bytes(), 5)
    )
}

/// The pod running `variant` from `template` on `node`. `replacement` marks a replacement for a failed pod;
/// `reason` says why it was placed where it is.
pub fn variant_pod(
    ens: &VariantEnsemble,
    variant: &str,
    template: &VariantTemplate,
    node: &str,
    reason: &str,
    replacement: Option<&Replacement<'_>>,
) -> Result<Pod, BuildError> {
    let name = variant_pod_name(&ens.name_any(), variant, node, &template.hash);
    let mut metadata = object_meta(ens, name, COMPONENT_VARIANT, Some(variant))?;
    let mut annotations = BTreeMap::from([
        (TEMPLATE_HASH.to_string(), template.hash.clone()),
        (labels::PLACEMENT_REASON.to_string(), reason.to_string()),
    ]);
    if let Some(r) = replacement {
        annotations.insert(FAILED_SINCE.into(), r.failed_since.to_string());
        annotations.insert(FAILURE_REASON.into(), r.reason.into());
    }
    metadata.annotations = Some(annotations);
    Ok(Pod {
        metadata,
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..template.spec.clone()
        }),
        status: None,
    })
}

/// The stable Service of one variant (what the aggregator config points at).
pub fn variant_service(ens: &VariantEnsemble, variant: &str) -> Result<Service, BuildError> {
    let name = ens.name_any();
    Ok(Service {
        metadata: object_meta(
            ens,
            variant_service_name(&name, variant),
            COMPONENT_VARIANT,
            Some(variant),
        )?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(labels::selector_labels(
                &name,
                COMPONENT_VARIANT,
                Some(variant),
            )),
            ports: Some(http_service_port(HTTP_PORT)),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}
