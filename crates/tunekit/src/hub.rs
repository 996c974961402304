//! Resolving a model id in a local Hugging Face hub cache, offline.
//!
//! Layout (as written by `huggingface_hub`): `<cache>/models--{org}--{name}/refs/main` holds a
//! commit hash and `snapshots/{hash}/` the files. tunekit never downloads: a model that is
//! neither a local directory nor in the cache is an error saying where it looked.

use std::path::{Path, PathBuf};

/// Errors resolving a model.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Neither a directory nor a cached model id.
    #[error(
        "model `{spec}` is neither a local directory nor in the Hugging Face cache (searched: {}); tunekit works offline and never downloads: put the model in a directory or the cache first",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        /// What the user asked for.
        spec: String,
        /// Cache locations checked.
        searched: Vec<PathBuf>,
    },
    /// The cache entry exists but has no usable snapshot.
    #[error("{dir}: cached model has no snapshot with a config.json")]
    NoSnapshot {
        /// The cache entry.
        dir: PathBuf,
    },
}

/// The hub cache directory: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

/// A directory as given, or the snapshot of a model id in the local hub cache.
pub fn resolve_model(spec: &str) -> Result<PathBuf, HubError> {
    resolve_model_in(spec, hub_cache_dir().as_deref())
}

/// [`resolve_model`] against an explicit cache directory.
pub fn resolve_model_in(spec: &str, cache: Option<&Path>) -> Result<PathBuf, HubError> {
    let direct = Path::new(spec);
    if direct.is_dir() {
        return Ok(direct.to_path_buf());
    }
    let not_found = || HubError::NotFound {
        spec: spec.to_string(),
        searched: cache.map(|c| vec![c.to_path_buf()]).unwrap_or_default(),
    };
    let Some(cache) = cache else {
        return Err(not_found());
    };
    if spec.is_empty() || spec.starts_with(['/', '.']) || spec.split('/').count() > 2 {
        return Err(not_found());
    }
    let entry = cache.join(format!("models--{}", spec.replace('/', "--")));
    if !entry.is_dir() {
        return Err(not_found());
    }
    let snapshots = entry.join("snapshots");
    if let Ok(hash) = std::fs::read_to_string(entry.join("refs/main")) {
        let snap = snapshots.join(hash.trim());
        if snap.join("config.json").is_file() {
            return Ok(snap);
        }
    }
    // No usable refs/main: the most recently modified snapshot with a config.json.
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snapshots)
        .map_err(|_| HubError::NoSnapshot { dir: entry.clone() })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("config.json").is_file())
        .map(|p| {
            let t = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, p)| p)
        .ok_or(HubError::NoSnapshot { dir: entry })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(cache: &Path, id: &str, hash: &str) -> PathBuf {
        let snap = cache
            .join(format!("models--{}", id.replace('/', "--")))
            .join("snapshots")
            .join(hash);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        snap
    }

    #[test]
    fn resolves_refs_main() {
        let tmp = tempfile::tempdir().unwrap();
        let want = snapshot(tmp.path(), "org/model", "abc123");
        snapshot(tmp.path(), "org/model", "zzz999");
        std::fs::create_dir_all(tmp.path().join("models--org--model/refs")).unwrap();
        std::fs::write(tmp.path().join("models--org--model/refs/main"), "abc123\n").unwrap();
        assert_eq!(
            resolve_model_in("org/model", Some(tmp.path())).unwrap(),
            want
        );
    }

    #[test]
    fn falls_back_to_the_only_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let want = snapshot(tmp.path(), "solo", "h1");
        assert_eq!(resolve_model_in("solo", Some(tmp.path())).unwrap(), want);
    }

    #[test]
    fn missing_model_names_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_model_in("org/none", Some(tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("org/none") && err.contains(&tmp.path().display().to_string()),
            "{err}"
        );
        assert!(err.contains("never downloads"));
    }

    #[test]
    fn a_directory_is_returned_as_is() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_str().unwrap();
        assert_eq!(resolve_model_in(d, None).unwrap(), tmp.path());
    }
}
