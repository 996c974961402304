//! Resolving a model id in a local Hugging Face hub cache, offline.
//!
//! Layout (as written by `huggingface_hub`): `<cache>/models--{org}--{name}/refs/main` holds a
//! commit hash and `snapshots/{hash}/` the files. tunekit never downloads: a model that is
//! neither a local directory nor in the cache is an error saying where it looked.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Errors resolving a model, each saying where tunekit looked so the user can fix the cache
/// or pass a directory.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Neither a directory nor a cached model id.
    #[error(
        "model `{spec}` is neither a local directory nor in the Hugging Face cache {}; tunekit works offline and never downloads: pass a model directory, or put the model in the cache first (e.g. `huggingface-cli download {spec}` on a machine with network access)",
        describe_searched(searched)
    )]
    NotFound {
        /// What the user asked for.
        spec: String,
        /// Cache directories checked (empty when no cache directory could be determined).
        searched: Vec<PathBuf>,
    },
    /// The cache entry exists but has no usable snapshot.
    #[error(
        "{dir}: the cached model has no usable snapshot (the one refs/main names, or else the newest, must contain config.json); the download may be incomplete"
    )]
    NoSnapshot {
        /// The cache entry (`.../models--{org}--{name}`).
        dir: PathBuf,
    },
}

fn describe_searched(searched: &[PathBuf]) -> String {
    if searched.is_empty() {
        return "(no cache directory is known: set HF_HUB_CACHE or HF_HOME)".to_string();
    }
    let dirs: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
    format!("at {}", dirs.join(", "))
}

/// The hub cache directory, found the way `huggingface_hub` finds it: `$HF_HUB_CACHE`, else
/// `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
/// Empty variables count as unset.
pub fn hub_cache_dir() -> Option<PathBuf> {
    cache_dir_from(|k| std::env::var_os(k))
}

/// [`hub_cache_dir`] with the environment passed in, so it can be tested without touching the
/// process environment.
fn cache_dir_from(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let var = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub")))
}

/// A directory as given, or the snapshot of a model id (`org/name` or `name`) in the local hub
/// cache ([`hub_cache_dir`]); what `--model` and `model.name` accept.
pub fn resolve_model(spec: &str) -> Result<PathBuf, HubError> {
    resolve_model_in(spec, hub_cache_dir().as_deref())
}

/// [`resolve_model`] against an explicit cache directory (`None`: no cache known), so tests
/// and callers with their own cache need not set environment variables.
pub fn resolve_model_in(spec: &str, cache: Option<&Path>) -> Result<PathBuf, HubError> {
    let direct = Path::new(spec);
    if direct.is_dir() {
        return Ok(direct.to_path_buf());
    }
    let not_found = || HubError::NotFound {
        spec: spec.to_string(),
        searched: cache.map(Path::to_path_buf).into_iter().collect(),
    };
    let Some(cache) = cache else {
        return Err(not_found());
    };
    if !is_model_id(spec) {
        return Err(not_found());
    }
    let entry = cache.join(format!("models--{}", spec.replace('/', "--")));
    if !entry.is_dir() {
        return Err(not_found());
    }
    let no_snapshot = || HubError::NoSnapshot { dir: entry.clone() };
    let snapshots = entry.join("snapshots");
    let has_config = |p: &Path| p.join("config.json").is_file();
    // refs/main, when present, decides (as in `huggingface_hub`): falling back to another
    // snapshot would silently load a different revision.
    if let Ok(hash) = std::fs::read_to_string(entry.join("refs").join("main")) {
        let hash = hash.trim();
        let snap = snapshots.join(hash);
        return if is_component(hash) && has_config(&snap) {
            Ok(snap)
        } else {
            Err(no_snapshot())
        };
    }
    // No refs/main: the only snapshot, or the most recently modified one.
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snapshots)
        .map_err(|_| no_snapshot())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| has_config(p))
        .map(|p| {
            let t = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, p)| p).ok_or_else(no_snapshot)
}

/// Whether `spec` has the shape of a hub id: `name` or `org/name`, each part a plain name.
fn is_model_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() <= 2 && parts.iter().all(|p| is_component(p))
}

/// A non-empty path component made of letters, digits, `-`, `_` and `.`, other than `.`/`..`.
fn is_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot directory with a config.json, as `huggingface_hub` lays it out.
    fn snapshot(cache: &Path, id: &str, hash: &str) -> PathBuf {
        let snap = cache
            .join(format!("models--{}", id.replace('/', "--")))
            .join("snapshots")
            .join(hash);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        snap
    }

    fn set_ref(cache: &Path, id: &str, hash: &str) {
        let refs = cache
            .join(format!("models--{}", id.replace('/', "--")))
            .join("refs");
        std::fs::create_dir_all(&refs).unwrap();
        std::fs::write(refs.join("main"), hash).unwrap();
    }

    #[test]
    fn resolves_refs_main() {
        let tmp = tempfile::tempdir().unwrap();
        let want = snapshot(tmp.path(), "org/model", "abc123");
        // A newer snapshot that refs/main does not name is not used.
        let newer = snapshot(tmp.path(), "org/model", "zzz999");
        let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        std::fs::File::open(newer)
            .unwrap()
            .set_modified(future)
            .unwrap();
        set_ref(tmp.path(), "org/model", "abc123\n");
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
    fn falls_back_to_the_newest_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let old = snapshot(tmp.path(), "org/m", "old");
        let new = snapshot(tmp.path(), "org/m", "new");
        let set_mtime = |p: &Path, secs: u64| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            std::fs::File::open(p).unwrap().set_modified(t).unwrap();
        };
        set_mtime(&old, 2_000_000_000);
        set_mtime(&new, 1_000_000_000);
        assert_eq!(resolve_model_in("org/m", Some(tmp.path())).unwrap(), old);
        set_mtime(&new, 2_100_000_000);
        assert_eq!(resolve_model_in("org/m", Some(tmp.path())).unwrap(), new);
        // A snapshot without config.json (a partial download) is never picked.
        let partial = tmp.path().join("models--org--m/snapshots/partial");
        std::fs::create_dir_all(&partial).unwrap();
        set_mtime(&partial, 2_200_000_000);
        assert_eq!(resolve_model_in("org/m", Some(tmp.path())).unwrap(), new);
    }

    #[test]
    fn refs_main_to_an_unusable_snapshot_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        snapshot(tmp.path(), "org/m", "good");
        set_ref(tmp.path(), "org/m", "missing");
        let err = resolve_model_in("org/m", Some(tmp.path())).unwrap_err();
        assert!(matches!(err, HubError::NoSnapshot { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("models--org--m") && msg.contains("config.json"),
            "{msg}"
        );
    }

    #[test]
    fn entry_without_snapshots_is_no_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("models--org--empty/blobs")).unwrap();
        let err = resolve_model_in("org/empty", Some(tmp.path())).unwrap_err();
        assert!(
            matches!(&err, HubError::NoSnapshot { dir } if dir.ends_with("models--org--empty")),
            "{err:?}"
        );
    }

    #[test]
    fn missing_model_names_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_model_in("org/none", Some(tmp.path())).unwrap_err();
        assert!(
            matches!(&err, HubError::NotFound { searched, .. } if searched == &[tmp.path().to_path_buf()]),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("org/none") && msg.contains(&tmp.path().display().to_string()),
            "{msg}"
        );
        assert!(
            msg.contains("never downloads") && msg.contains("offline"),
            "{msg}"
        );
    }

    #[test]
    fn no_cache_known_says_how_to_set_one() {
        let msg = resolve_model_in("org/none", None).unwrap_err().to_string();
        assert!(msg.contains("HF_HUB_CACHE"), "{msg}");
    }

    #[test]
    fn path_like_specs_are_not_looked_up() {
        let tmp = tempfile::tempdir().unwrap();
        // A cache entry that a sloppy id mapping would hit.
        snapshot(tmp.path(), "a/b", "h");
        for spec in ["", "a/b/c", "../a", "a//b", "/a/b", "a/..", "a\\b"] {
            let err = resolve_model_in(spec, Some(tmp.path())).unwrap_err();
            assert!(matches!(err, HubError::NotFound { .. }), "{spec}: {err:?}");
        }
        assert!(resolve_model_in("a/b", Some(tmp.path())).is_ok());
    }

    #[test]
    fn a_directory_is_returned_as_is() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_str().unwrap();
        assert_eq!(resolve_model_in(d, None).unwrap(), tmp.path());
        // A file is not a model directory.
        let f = tmp.path().join("config.json");
        std::fs::write(&f, "{}").unwrap();
        let err = resolve_model_in(f.to_str().unwrap(), None).unwrap_err();
        assert!(matches!(err, HubError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn cache_dir_follows_the_hf_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all = &[
            ("HF_HUB_CACHE", "/c"),
            ("HF_HOME", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(cache_dir_from(env(all)), Some(PathBuf::from("/c")));
        assert_eq!(
            cache_dir_from(env(&[
                ("HF_HUB_CACHE", ""),
                ("HF_HOME", "/h"),
                ("HOME", "/u")
            ])),
            Some(PathBuf::from("/h/hub"))
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/u")])),
            Some(PathBuf::from("/x/huggingface/hub"))
        );
        assert_eq!(
            cache_dir_from(env(&[("HOME", "/home/u")])),
            Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
        );
        assert_eq!(cache_dir_from(env(&[])), None);
    }
}
