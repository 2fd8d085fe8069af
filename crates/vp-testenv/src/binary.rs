//! Where the `vp-controlplane` binary lives: `$VP_CONTROLPLANE_BIN` if set, else the cache that
//! `scripts/setup-controlplane.sh` fills (`$VP_CACHE/bin`, with `VP_CACHE` defaulting as in `scripts/env.sh`).

use std::path::PathBuf;

use crate::Error;

/// Environment variable that names the control plane binary explicitly.
pub const BINARY_ENV: &str = "VP_CONTROLPLANE_BIN";

/// The binary's path from the given environment values (pure: `explicit` is `$VP_CONTROLPLANE_BIN`, `cache`
/// is `$VP_CACHE`, `home` is `$HOME`).
pub(crate) fn resolve(
    explicit: Option<String>,
    cache: Option<String>,
    home: Option<String>,
) -> PathBuf {
    if let Some(p) = explicit.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = match cache.filter(|c| !c.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => {
            PathBuf::from(home.unwrap_or_else(|| "/root".into())).join(".cache/variant-parallel")
        }
    };
    cache.join("bin/vp-controlplane")
}

/// The path of the control plane binary, or [`Error::BinaryMissing`] (telling to run `scripts/setup.sh`) if it
/// is not there.
pub fn binary_path() -> Result<PathBuf, Error> {
    let env = |k: &str| std::env::var(k).ok();
    let path = resolve(env(BINARY_ENV), env("VP_CACHE"), env("HOME"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::BinaryMissing {
            path,
            env: BINARY_ENV,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_wins() {
        let p = resolve(Some("/x/cp".into()), Some("/c".into()), Some("/h".into()));
        assert_eq!(p, PathBuf::from("/x/cp"));
    }

    #[test]
    fn cache_then_home() {
        assert_eq!(
            resolve(None, Some("/c".into()), Some("/h".into())),
            PathBuf::from("/c/bin/vp-controlplane")
        );
        assert_eq!(
            resolve(Some(String::new()), None, Some("/h".into())),
            PathBuf::from("/h/.cache/variant-parallel/bin/vp-controlplane")
        );
    }

    #[test]
    fn missing_binary_says_to_run_setup() {
        let err = Error::BinaryMissing {
            path: "/nope/vp-controlplane".into(),
            env: BINARY_ENV,
        };
        let msg = err.to_string();
        assert!(msg.contains("scripts/setup.sh"), "{msg}");
        assert!(msg.contains("/nope/vp-controlplane"), "{msg}");
    }
}
