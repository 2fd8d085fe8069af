//! The config digest: one name for one version of the aggregator's config files (its config and the manifest
//! it names). The operator computes it from the ConfigMap it writes and the aggregator from the bytes it
//! loaded, so "does this replica serve the current config" is a string comparison, whichever way the files
//! reached the replica (a kubelet updates a mounted ConfigMap asynchronously).

use sha2::{Digest, Sha256};

/// Hex sha256 over the config file's length (8 bytes, big-endian), the config file and the manifest: the
/// length keeps (`ab`, `c`) and (`a`, `bc`) apart.
pub fn config_digest(config: &[u8], manifest: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update((config.len() as u64).to_be_bytes());
    h.update(config);
    h.update(manifest);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::config_digest;

    #[test]
    fn every_byte_and_the_boundary_count() {
        let d = config_digest(b"ab", b"c");
        assert_eq!(d.len(), 64);
        assert_eq!(d, config_digest(b"ab", b"c"), "stable");
        assert_ne!(d, config_digest(b"a", b"bc"), "the boundary is part of it");
        assert_ne!(d, config_digest(b"ab", b"d"));
        assert_ne!(d, config_digest(b"aB", b"c"));
        // sha256 of 8 zero bytes: pins the definition, which the operator and the aggregator share.
        assert_eq!(
            config_digest(b"", b""),
            "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"
        );
    }
}
