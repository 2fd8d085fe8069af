//! Step 2 of a reconcile: check the spec against the family manifest it names (classes, variant names, URL
//! digests, k) and against what the cluster admin allows (hostPath folders). Pure. k is checked by the data
//! plane's own rule (`vp_api::validate_k`), so the operator refuses exactly the k the variant servers and the
//! aggregator would refuse.

use std::collections::BTreeSet;
use vp_api::{EnsembleManifest, VariantEnsemble, VariantSourceKind, validate_k};

/// A spec that agrees with its manifest, with the manifest (and its text, copied for the aggregator).
#[derive(Clone, Copy, Debug)]
pub struct Valid<'a> {
    /// The parsed manifest.
    pub manifest: &'a EnsembleManifest,
    /// Its text as read.
    pub manifest_text: &'a str,
}

/// Checks the spec against the manifest read by the gather step (`Err`: why the manifest could not be read).
/// `Err` says, for the status, why the spec cannot be carried out.
pub fn validate<'a>(
    ens: &VariantEnsemble,
    manifest: Result<(&'a EnsembleManifest, &'a str), &str>,
    host_path_prefixes: &[String],
) -> Result<Valid<'a>, String> {
    let (m, text) = manifest.map_err(str::to_string)?;
    let spec = &ens.spec;
    if usize::try_from(spec.model.classes).ok() != Some(m.output.classes) {
        return Err(format!(
            "spec.model.classes is {} but the manifest's output.classes is {}",
            spec.model.classes, m.output.classes
        ));
    }
    validate_k(i64::from(spec.top_k), m.output.classes).map_err(|e| format!("topK: {e}"))?;
    let mut seen = BTreeSet::new();
    for v in &spec.variants {
        if !seen.insert(&v.name) {
            return Err(format!("variant {} appears twice", v.name));
        }
        let mv = m.variant(&v.name).ok_or_else(|| {
            let known: Vec<&str> = m.variants.iter().map(|v| v.name.as_str()).collect();
            format!(
                "variant {} is not in manifest family {} (it has {})",
                v.name,
                m.family,
                known.join(", ")
            )
        })?;
        match v.source.kind() {
            None => {
                return Err(format!(
                    "variant {}: source must set exactly one kind",
                    v.name
                ));
            }
            Some(VariantSourceKind::Url(u)) if !u.sha256.eq_ignore_ascii_case(&mv.sha256) => {
                return Err(format!(
                    "variant {}: url sha256 {} differs from the manifest's {}",
                    v.name, u.sha256, mv.sha256
                ));
            }
            Some(VariantSourceKind::HostPath(path))
                if !host_path_allowed(path, host_path_prefixes) =>
            {
                return Err(if host_path_prefixes.is_empty() {
                    format!(
                        "variant {}: hostPath sources are not allowed by this operator (its --host-path-prefixes \
                         is empty); use a configMap, url or persistentVolumeClaim source",
                        v.name
                    )
                } else {
                    format!(
                        "variant {}: hostPath {path} is not under a folder this operator allows ({}; its \
                         --host-path-prefixes)",
                        v.name,
                        host_path_prefixes.join(", ")
                    )
                });
            }
            Some(_) => {}
        }
    }
    Ok(Valid {
        manifest: m,
        manifest_text: text,
    })
}

/// Whether `path` is an absolute path inside one of `prefixes` (component-wise: `/var/lib/vpx` is not inside
/// `/var/lib/vp`), with no `.` or `..` component that could climb out of it.
pub fn host_path_allowed(path: &str, prefixes: &[String]) -> bool {
    let parts = |p: &str| -> Option<Vec<String>> {
        let p = p.strip_prefix('/')?;
        let mut out = Vec::new();
        for c in p.split('/').filter(|c| !c.is_empty()) {
            if c == "." || c == ".." {
                return None;
            }
            out.push(c.to_string());
        }
        Some(out)
    };
    let Some(path) = parts(path) else {
        return false;
    };
    prefixes
        .iter()
        .filter_map(|p| parts(p))
        .any(|prefix| path.len() > prefix.len() && path.starts_with(&prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn check(ens: &VariantEnsemble) -> Result<(), String> {
        check_with(ens, &["/var/lib/vp".into()])
    }

    fn check_with(ens: &VariantEnsemble, prefixes: &[String]) -> Result<(), String> {
        let m = fixtures::manifest();
        validate(ens, Ok((&m, fixtures::MANIFEST)), prefixes).map(|_| ())
    }

    #[test]
    fn host_paths_only_inside_the_allowed_folders() {
        let allowed = ["/var/lib/vp".to_string(), "/models/".to_string()];
        for ok in [
            "/var/lib/vp/v0.onnx",
            "/var/lib/vp/fm/v0.onnx",
            "//var/lib/vp//x",
            "/models/a",
        ] {
            assert!(host_path_allowed(ok, &allowed), "{ok} should be allowed");
        }
        for bad in [
            "/var/lib/vp",
            "/var/lib/vpx/v0.onnx",
            "/var/lib/vp/../../etc/shadow",
            "/var/lib/vp/./v0.onnx",
            "/etc/shadow",
            "var/lib/vp/v0.onnx",
            "/",
            "",
        ] {
            assert!(!host_path_allowed(bad, &allowed), "{bad} should be refused");
        }
        assert!(!host_path_allowed("/var/lib/vp/v0.onnx", &[]));
    }

    #[test]
    fn a_host_path_outside_the_allowed_folders_is_invalid() {
        // The fixture's v2 reads /var/lib/vp/fmnist/v2.onnx.
        check_with(&fixtures::ensemble(), &["/var/lib/vp/fmnist".into()]).expect("inside");
        let e = check_with(&fixtures::ensemble(), &["/srv/models".into()]).expect_err("outside");
        assert!(
            e.contains("variant v2: hostPath /var/lib/vp/fmnist/v2.onnx is not under a folder this operator allows (/srv/models; its --host-path-prefixes)"),
            "{e}"
        );
        let e = check_with(&fixtures::ensemble(), &[]).expect_err("none allowed");
        assert!(
            e.contains("hostPath sources are not allowed by this operator"),
            "{e}"
        );
    }

    #[test]
    fn the_fixture_is_valid() {
        check(&fixtures::ensemble()).expect("valid");
    }

    #[test]
    fn each_mismatch_is_named() {
        type Change = fn(&mut VariantEnsemble);
        let cases: [(Change, &str); 5] = [
            (|e| e.spec.model.classes = 12, "classes is 12"),
            (|e| e.spec.top_k = 6, "topK: k must be between 1 and 5"),
            (|e| e.spec.top_k = 0, "got 0"),
            (|e| e.spec.variants[1].name = "v0".into(), "appears twice"),
            (
                |e| e.spec.variants[0].name = "v9".into(),
                "not in manifest family",
            ),
        ];
        for (change, want) in cases {
            let mut ens = fixtures::ensemble();
            change(&mut ens);
            let e = check(&ens).expect_err(want);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    #[test]
    fn an_unreadable_manifest_is_the_reason() {
        let e = validate(
            &fixtures::ensemble(),
            Err("manifest ConfigMap edge/x not found"),
            &[],
        )
        .expect_err("no manifest");
        assert!(e.contains("not found"));
    }
}
