//! What `--resume` checks before it continues a run: the configuration (naming every key that
//! differs) and a SHA-256 fingerprint of every input file — the data files of every split, the
//! pretrained model's weights, config and tokenizer, and a distillation teacher's files.
//! A checkpoint trained on other inputs cannot continue bit-identically, so a resume after any
//! of them changed is refused, naming the file.
//!
//! The fingerprints are written to `inputs.json` in the run directory when a run starts from
//! the beginning; the run's checkpoints all belong to that start.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::RunConfig;
use crate::error::{Error, Result};

/// File in the run directory holding the fingerprints of the run's inputs.
pub const INPUTS: &str = "inputs.json";

/// Model files whose contents decide what a run trains (when the directory has them).
const MODEL_FILES: [&str; 7] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "adapter_config.json",
    "adapter_model.safetensors",
];

/// One input file of a run and the SHA-256 of its contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFingerprint {
    /// What the file is to the run: `data.train`, `model`, `distill.teacher`, ...
    pub role: String,
    /// The file, as the run read it.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the contents, lower-case hex.
    pub sha256: String,
}

/// SHA-256 (hex) and size of a file's contents, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        // `read` returns at most the buffer's length.
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, bytes))
}

/// The input files of a run: every split's data file, the model's files and, when
/// distilling, the teacher's. Files that do not exist are left out (the run itself reports
/// them when it opens them).
fn input_files(config: &RunConfig) -> Vec<(String, PathBuf)> {
    let d = &config.data;
    let mut files: Vec<(String, PathBuf)> = vec![("data.train".into(), d.train.clone())];
    files.extend(
        d.validation
            .iter()
            .map(|p| ("data.validation".into(), p.clone())),
    );
    files.extend(d.test.iter().map(|p| ("data.test".into(), p.clone())));
    let mut models = vec![("model", config.model.path.as_str())];
    if let Some(distill) = &config.distill {
        models.push(("distill.teacher", distill.teacher.as_str()));
    }
    for (role, spec) in models {
        // A single-file model (a decoder's `.gguf`) is fingerprinted itself.
        if Path::new(spec).is_file() {
            files.push((role.to_string(), PathBuf::from(spec)));
            continue;
        }
        let Ok(dir) = crate::hub::resolve_model(spec) else {
            continue;
        };
        files.extend(
            MODEL_FILES
                .iter()
                .map(|f| dir.join(f))
                .map(|p| (role.to_string(), p)),
        );
    }
    files.retain(|(_, p)| p.is_file());
    files
}

/// Fingerprints of every input of `config` ([`input_files`]).
pub fn fingerprint_inputs(config: &RunConfig) -> Result<Vec<InputFingerprint>> {
    input_files(config)
        .into_iter()
        .map(|(role, path)| {
            let (sha256, bytes) = sha256_file(&path)?;
            Ok(InputFingerprint {
                role,
                path,
                bytes,
                sha256,
            })
        })
        .collect()
}

/// Refuse a resume whose inputs differ from the recorded ones, naming every changed file.
pub fn check_inputs(recorded: &[InputFingerprint], now: &[InputFingerprint]) -> Result<()> {
    let short = |s: &str| s.chars().take(12).collect::<String>();
    let mut changes = Vec::new();
    for r in recorded {
        let current = now.iter().find(|n| n.role == r.role && n.path == r.path);
        match current {
            Some(n) if n.sha256 == r.sha256 => {}
            Some(n) => changes.push(format!(
                "{} ({}) changed since the run started: {} → {} bytes, sha256 {} → {}",
                r.path.display(),
                r.role,
                r.bytes,
                n.bytes,
                short(&r.sha256),
                short(&n.sha256)
            )),
            None => changes.push(format!(
                "{} ({}) is no longer there",
                r.path.display(),
                r.role
            )),
        }
    }
    for n in now {
        if !recorded
            .iter()
            .any(|r| r.role == n.role && r.path == n.path)
        {
            changes.push(format!(
                "{} ({}) was not an input when the run started",
                n.path.display(),
                n.role
            ));
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    Err(Error::Checkpoint(format!(
        "--resume: the run's inputs changed, so its checkpoints cannot continue it: {}; \
         restore the original files or start a new run (another --run-dir / run.name)",
        changes.join("; ")
    )))
}

/// Dotted keys (`train.seed`) whose values differ between two configurations, with both
/// values (`absent` where a key is in one only), sorted.
pub fn config_differences(before: &RunConfig, now: &RunConfig) -> Result<Vec<String>> {
    let table = |c: &RunConfig| -> Result<toml::Table> {
        c.to_toml()?
            .parse()
            .map_err(|e: toml::de::Error| Error::Config(format!("serialised config: {e}")))
    };
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    crate::index::flatten("", &toml::Value::Table(table(before)?), &mut a);
    crate::index::flatten("", &toml::Value::Table(table(now)?), &mut b);
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let absent = "absent".to_string();
    Ok(keys
        .into_iter()
        .filter_map(|k| {
            let (x, y) = (a.get(k).unwrap_or(&absent), b.get(k).unwrap_or(&absent));
            (x != y).then(|| format!("{k} ({x} → {y})"))
        })
        .collect())
}

/// The resume checks of a run about to start in `run_dir`: with `resume` and a checkpoint
/// there, the configuration must equal the saved one (else the differing keys are named) and
/// every input must have the recorded fingerprint; otherwise the fingerprints of this start
/// are recorded.
pub fn check_or_record(
    run_dir: &Path,
    config: &RunConfig,
    resume: bool,
    has_checkpoint: bool,
) -> Result<()> {
    if resume {
        let saved = run_dir.join("config.toml");
        let previous = RunConfig::load(&saved, &[])?;
        if previous != *config {
            let keys = config_differences(&previous, config)?;
            return Err(Error::Checkpoint(format!(
                "--resume: the configuration differs from the one this run started with ({}): {}; resume with the same config and --set values",
                saved.display(),
                if keys.is_empty() {
                    "values differ".to_string()
                } else {
                    keys.join(", ")
                }
            )));
        }
    }
    let now = fingerprint_inputs(config)?;
    let path = run_dir.join(INPUTS);
    if resume && has_checkpoint {
        if path.is_file() {
            let recorded: Vec<InputFingerprint> = crate::fsutil::read_json(&path)?;
            return check_inputs(&recorded, &now);
        }
        tracing::warn!(
            "--resume: {} is missing (a run from an older tunekit); the inputs cannot be checked",
            path.display()
        );
        return Ok(());
    }
    crate::fsutil::write_json(&path, &now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(role: &str, path: &str, sha: &str) -> InputFingerprint {
        InputFingerprint {
            role: role.into(),
            path: path.into(),
            bytes: 1,
            sha256: sha.into(),
        }
    }

    #[test]
    fn sha256_of_a_file_is_the_standard_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, "abc").unwrap();
        let (hex, bytes) = sha256_file(&p).unwrap();
        assert_eq!(bytes, 3);
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn changed_missing_and_new_inputs_are_each_named() {
        let recorded = vec![fp("data.train", "t.tsv", "aa"), fp("model", "m", "bb")];
        assert!(check_inputs(&recorded, &recorded).is_ok());
        let now = vec![
            fp("data.train", "t.tsv", "cc"),
            fp("data.test", "x.tsv", "dd"),
        ];
        let msg = check_inputs(&recorded, &now).unwrap_err().to_string();
        assert!(msg.contains("t.tsv (data.train) changed"), "{msg}");
        assert!(msg.contains("m (model) is no longer there"), "{msg}");
        assert!(msg.contains("x.tsv (data.test) was not an input"), "{msg}");
    }
}
