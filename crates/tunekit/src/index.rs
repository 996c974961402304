//! The experiment index: every training run is recorded in an SQLite database next to the run
//! directories (`<runs dir>/index.sqlite`, `rusqlite` with SQLite bundled) — its config,
//! status, timings and final metrics — so runs can be listed, shown and compared without
//! walking directories or parsing files by hand.
//!
//! The index is a record, not the source of truth: the run directory is. A failure to write
//! the index is reported as a warning and never fails a training run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File name of the index inside a runs directory.
pub const INDEX_FILE: &str = "index.sqlite";

/// One run as the index has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// Run name (`run.name`).
    pub name: String,
    /// Run directory.
    pub run_dir: String,
    /// `train`, `distill` or `cv`.
    pub kind: String,
    /// `running`, `failed` or `complete`.
    pub status: String,
    /// Start, seconds since the Unix epoch.
    pub started_at: i64,
    /// End, seconds since the Unix epoch.
    pub finished_at: Option<i64>,
    /// Final numbers (empty while running or after a failure).
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The resolved config (TOML).
    pub config: String,
    /// Error of a failed run.
    pub error: Option<String>,
}

/// Final numbers of a run (CV runs: means over the folds, summed time and steps).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Training wall time.
    pub train_time_s: Option<f64>,
    /// Optimiser steps.
    pub steps: Option<i64>,
    /// Best validation accuracy.
    pub validation_accuracy: Option<f64>,
    /// Best validation macro-F1.
    pub validation_macro_f1: Option<f64>,
    /// Test accuracy.
    pub test_accuracy: Option<f64>,
    /// Test macro-F1.
    pub test_macro_f1: Option<f64>,
    /// `metrics.json` as written.
    pub metrics: Option<String>,
}

/// An open index.
pub struct RunIndex {
    conn: Connection,
    path: PathBuf,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn db_err(path: &Path, e: rusqlite::Error) -> Error {
    Error::Config(format!("{}: experiment index: {e}", path.display()))
}

const COLUMNS: &str = "name, run_dir, kind, status, started_at, finished_at, train_time_s, steps, \
     validation_accuracy, validation_macro_f1, test_accuracy, test_macro_f1, config, metrics, error";

impl RunIndex {
    /// Open (creating if needed) the index of the runs directory `runs_dir`.
    pub fn open(runs_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(runs_dir).map_err(|e| Error::io(runs_dir, e))?;
        let path = runs_dir.join(INDEX_FILE);
        let conn = Connection::open(&path).map_err(|e| db_err(&path, e))?;
        // Several runs may finish at once (parallel jobs, HPO trials): wait, do not fail.
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| db_err(&path, e))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs (
                run_dir TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                started_at INTEGER NOT NULL,
                finished_at INTEGER,
                train_time_s REAL,
                steps INTEGER,
                validation_accuracy REAL,
                validation_macro_f1 REAL,
                test_accuracy REAL,
                test_macro_f1 REAL,
                config TEXT NOT NULL,
                metrics TEXT,
                error TEXT
            );",
        )
        .map_err(|e| db_err(&path, e))?;
        Ok(RunIndex { conn, path })
    }

    /// Where the index lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record a run as started (replacing an earlier record of the same directory).
    pub fn start(&self, name: &str, run_dir: &Path, kind: &str, config: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO runs (run_dir, name, kind, status, started_at, config)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
                params![run_dir.display().to_string(), name, kind, now(), config],
            )
            .map_err(|e| db_err(&self.path, e))?;
        Ok(())
    }

    /// Record how a run ended.
    pub fn finish(
        &self,
        run_dir: &Path,
        status: &str,
        error: Option<&str>,
        outcome: &Outcome,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET status = ?2, finished_at = ?3, error = ?4, train_time_s = ?5,
                 steps = ?6, validation_accuracy = ?7, validation_macro_f1 = ?8,
                 test_accuracy = ?9, test_macro_f1 = ?10, metrics = ?11
                 WHERE run_dir = ?1",
                params![
                    run_dir.display().to_string(),
                    status,
                    now(),
                    error,
                    outcome.train_time_s,
                    outcome.steps,
                    outcome.validation_accuracy,
                    outcome.validation_macro_f1,
                    outcome.test_accuracy,
                    outcome.test_macro_f1,
                    outcome.metrics,
                ],
            )
            .map_err(|e| db_err(&self.path, e))?;
        Ok(())
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
        Ok(RunRow {
            name: r.get(0)?,
            run_dir: r.get(1)?,
            kind: r.get(2)?,
            status: r.get(3)?,
            started_at: r.get(4)?,
            finished_at: r.get(5)?,
            outcome: Outcome {
                train_time_s: r.get(6)?,
                steps: r.get(7)?,
                validation_accuracy: r.get(8)?,
                validation_macro_f1: r.get(9)?,
                test_accuracy: r.get(10)?,
                test_macro_f1: r.get(11)?,
                metrics: r.get(13)?,
            },
            config: r.get(12)?,
            error: r.get(14)?,
        })
    }

    /// All runs, oldest first.
    pub fn list(&self) -> Result<Vec<RunRow>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM runs ORDER BY started_at, run_dir"
            ))
            .map_err(|e| db_err(&self.path, e))?;
        let rows = stmt
            .query_map([], Self::row)
            .map_err(|e| db_err(&self.path, e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| db_err(&self.path, e))?;
        Ok(rows)
    }

    /// The run with this name or run directory (the latest, if a name was reused).
    pub fn get(&self, name_or_dir: &str) -> Result<RunRow> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM runs WHERE name = ?1 OR run_dir = ?1
                     ORDER BY started_at DESC LIMIT 1"
                ),
                params![name_or_dir],
                Self::row,
            )
            .optional()
            .map_err(|e| db_err(&self.path, e))?
            .ok_or_else(|| {
                Error::Config(format!(
                    "{}: no run named {name_or_dir:?} (tunekit runs list shows them)",
                    self.path.display()
                ))
            })
    }
}

/// The value of a metric column by name, for sorting (`validation_accuracy`, `test_macro_f1`,
/// `train_time_s`, ...).
pub fn metric(row: &RunRow, name: &str) -> Option<f64> {
    let o = &row.outcome;
    match name {
        "validation_accuracy" => o.validation_accuracy,
        "validation_macro_f1" => o.validation_macro_f1,
        "test_accuracy" => o.test_accuracy,
        "test_macro_f1" => o.test_macro_f1,
        "train_time_s" => o.train_time_s,
        _ => None,
    }
}

/// Names `metric` accepts.
pub const SORT_KEYS: &[&str] = &[
    "validation_accuracy",
    "validation_macro_f1",
    "test_accuracy",
    "test_macro_f1",
    "train_time_s",
];

/// Sort runs by `key` (one of [`SORT_KEYS`]): best first (highest score; shortest
/// `train_time_s`), runs without the value last in their listed order.
///
/// # Errors
/// [`Error::Config`] naming the accepted keys for any other key.
pub fn sort_runs(rows: &mut [RunRow], key: &str) -> Result<()> {
    if !SORT_KEYS.contains(&key) {
        return Err(Error::Config(format!(
            "--sort {key}: expected one of {}",
            SORT_KEYS.join(", ")
        )));
    }
    let lower_first = key == "train_time_s";
    rows.sort_by(|a, b| match (metric(a, key), metric(b, key)) {
        (Some(x), Some(y)) if lower_first => x.total_cmp(&y),
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Ok(())
}

/// Flatten a TOML document to `section.key = value` pairs.
pub(crate) fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Config keys whose values differ between runs: (key, value per run; `None` = absent).
pub fn config_diff(configs: &[&str]) -> Result<Vec<(String, Vec<Option<String>>)>> {
    let flat: Vec<BTreeMap<String, String>> = configs
        .iter()
        .map(|c| {
            let v: toml::Value = toml::from_str(c)
                .map_err(|e| Error::Config(format!("stored config does not parse: {e}")))?;
            let mut out = BTreeMap::new();
            flatten("", &v, &mut out);
            Ok(out)
        })
        .collect::<Result<_>>()?;
    let mut keys: Vec<&String> = flat.iter().flat_map(|m| m.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter_map(|k| {
            let values: Vec<Option<String>> = flat.iter().map(|m| m.get(k).cloned()).collect();
            let first = &values[0];
            values
                .iter()
                .any(|v| v != first)
                .then(|| (k.clone(), values))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_recorded_listed_and_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let index = RunIndex::open(dir.path()).unwrap();
        let a = dir.path().join("a");
        index
            .start("a", &a, "train", "[train]\nepochs = 1\n")
            .unwrap();
        let row = index.get("a").unwrap();
        assert_eq!((row.status.as_str(), row.finished_at), ("running", None));
        index
            .finish(
                &a,
                "complete",
                None,
                &Outcome {
                    test_accuracy: Some(0.75),
                    steps: Some(10),
                    ..Outcome::default()
                },
            )
            .unwrap();
        let b = dir.path().join("b");
        index
            .start("b", &b, "train", "[train]\nepochs = 2\n")
            .unwrap();
        index
            .finish(&b, "failed", Some("boom"), &Outcome::default())
            .unwrap();
        // A second connection (another process) sees the same rows.
        let again = RunIndex::open(dir.path()).unwrap();
        let rows = again.list().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].outcome.test_accuracy, Some(0.75));
        assert_eq!(rows[1].error.as_deref(), Some("boom"));
        assert_eq!(again.get(&b.display().to_string()).unwrap().name, "b");
        assert!(
            again
                .get("nope")
                .unwrap_err()
                .to_string()
                .contains("no run named")
        );
    }

    #[test]
    fn config_diff_lists_only_differing_keys() {
        let a = "[train]\nepochs = 1\nseed = 3\n[model]\npath = \"m\"\n";
        let b =
            "[train]\nepochs = 2\nseed = 3\n[model]\npath = \"m\"\n[strategy]\nfreeze_layers = 2\n";
        let d = config_diff(&[a, b]).unwrap();
        let keys: Vec<&str> = d.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["strategy.freeze_layers", "train.epochs"]);
        assert_eq!(d[1].1, [Some("1".to_string()), Some("2".to_string())]);
        assert_eq!(d[0].1[0], None);
    }
}
