//! A namespace of its own for each test, so that tests sharing a control plane do not see each other's objects.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::wait::{Poll, until};
use crate::{ControlPlane, Error};

/// How long the service account controller may take to create `default` in a new namespace.
const DEFAULT_SA_TIMEOUT: Duration = Duration::from_secs(60);

/// A name unique within this test process and across processes started in the same second or later:
/// `prefix-<pid base 36>-<counter>-<time>`, shortened to fit a DNS label. `prefix` should be a short DNS label.
pub fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() % 100_000)
        .unwrap_or_default();
    let mut name = format!("{}-{}-{n}-{t}", prefix, base36(std::process::id()));
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

fn base36(mut v: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// A namespace created for one test, with a client whose default namespace it is. It is not deleted on drop
/// (the control plane is thrown away at the end anyway, and a kept namespace helps to debug a failure); call
/// [`TestNamespace::delete`] to test deletion itself.
#[derive(Clone)]
pub struct TestNamespace {
    name: String,
    client: Client,
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An admin client (bound to the runtime of the test that created the namespace).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A namespaced API handle for a kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace (asynchronously, as Kubernetes does).
    pub async fn delete(self) -> Result<(), Error> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.delete(&self.name, &DeleteParams::default())
            .await
            .map_err(|e| Error::kube(format!("delete namespace {}", self.name), e))?;
        Ok(())
    }
}

impl ControlPlane {
    /// Creates a fresh namespace named after `prefix` (see [`unique_name`]) and waits until its `default`
    /// service account exists, so pods can be created in it right away.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, Error> {
        let client = self.client().await?;
        let name = unique_name(prefix);
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .map_err(|e| Error::kube(format!("create namespace {name}"), e))?;
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        until(
            &format!("service account default in namespace {name}"),
            DEFAULT_SA_TIMEOUT,
            || {
                let sas = sas.clone();
                async move {
                    match sas.get_opt("default").await {
                        Ok(Some(_)) => Ok(Poll::Ready(())),
                        Ok(None) => Ok(Poll::Pending("not created yet".into())),
                        Err(e) => Ok(Poll::Pending(e.to_string())),
                    }
                }
            },
        )
        .await?;
        Ok(TestNamespace { name, client })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_unique_dns_labels() {
        let a = unique_name("edge");
        let b = unique_name("edge");
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(n.starts_with("edge-") && n.len() <= 63, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
        }
        let long = unique_name(&"x".repeat(80));
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
