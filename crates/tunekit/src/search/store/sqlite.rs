//! The default study store: `STUDY/search.sqlite`, one file next to the trials.
//!
//! Claims run in `BEGIN IMMEDIATE` transactions (SQLite's write lock), so several processes on
//! one machine may share the file too. A running trial is stale when its heartbeat is older
//! than the grace period or its worker was a process of this machine that is gone — so a
//! search killed and started again resumes its interrupted trial at once, as before
//! heartbeats existed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    Claim, ClaimRequest, Columns, Decision, FailedAttempt, Row, StudyStore, decide, to_json,
    worker_gone_here,
};
use crate::error::{Error, Result};
use crate::search::study::{STATE_FILE, TrialRecord};
use crate::search::{Trial, TrialState, Value, next_trial_number};

/// Unix time in seconds, in SQLite.
const NOW: &str = "((julianday('now') - 2440587.5) * 86400.0)";

/// Schema migrations, applied in order; `schema_version` holds the last one applied.
/// Version 1 is the layout of files written before versioning (hence `IF NOT EXISTS`).
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS trials (
            number INTEGER PRIMARY KEY, state TEXT NOT NULL, params TEXT NOT NULL,
            objective REAL, intermediate TEXT NOT NULL, run_dir TEXT NOT NULL,
            seconds REAL, error TEXT);",
    ),
    (
        2,
        "ALTER TABLE trials ADD COLUMN worker TEXT;
         ALTER TABLE trials ADD COLUMN heartbeat REAL;
         CREATE TABLE trial_attempts (
            id INTEGER PRIMARY KEY, number INTEGER NOT NULL REFERENCES trials(number),
            worker TEXT NOT NULL, error TEXT NOT NULL, at REAL NOT NULL);",
    ),
];

/// A study in `STUDY/search.sqlite`.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Open (creating and migrating) `dir/search.sqlite`; refuse a study made with another
    /// fingerprint.
    pub fn open(dir: &Path, fingerprint: &str) -> Result<Self> {
        let path = dir.join(STATE_FILE);
        let mut store = SqliteStore {
            conn: Connection::open(&path)
                .map_err(|e| Error::Storage(format!("{}: {e}", path.display())))?,
            path,
        };
        store.migrate()?;
        store.check_fingerprint(fingerprint)?;
        Ok(store)
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::Storage(format!("{}: {e}", self.path.display()))
    }

    /// The schema version of the file (0: new file).
    pub fn schema_version(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map(|v| v.unwrap_or(0))
            .map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.display().to_string();
        let err = |e: rusqlite::Error| Error::Storage(format!("{path}: {e}"));
        self.conn
            .busy_timeout(Duration::from_secs(60))
            .map_err(err)?;
        self.conn
            .execute_batch("PRAGMA journal_mode = WAL;")
            .map_err(err)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")
            .map_err(err)?;
        let current: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let latest = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > latest {
            return Err(Error::Storage(format!(
                "{path}: schema version {current} is newer than this tunekit's ({latest}); \
                 use a newer tunekit"
            )));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.execute_batch(sql).map_err(err)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                params![version],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn check_fingerprint(&mut self, fingerprint: &str) -> Result<()> {
        let stored: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'fingerprint'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        match stored {
            Some(s) if s != fingerprint => Err(Error::Config(format!(
                "{} holds a search with a different config or [search] section; resume it with \
                 the same config, or give another --run-dir / run.name",
                self.path.display()
            ))),
            Some(_) => Ok(()),
            None => self
                .conn
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('fingerprint', ?1)",
                    params![fingerprint],
                )
                .map(|_| ())
                .map_err(|e| self.err(e)),
        }
    }
}

/// Every trial with its worker and staleness, read in `conn`'s current transaction.
fn load_rows(conn: &Connection, location: &str, grace: Duration) -> Result<Vec<Row>> {
    let err = |e: rusqlite::Error| Error::Storage(format!("{location}: {e}"));
    let mut attempts: Vec<(usize, FailedAttempt)> = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT number, worker, error FROM trial_attempts ORDER BY id")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as usize,
                    FailedAttempt {
                        worker: r.get(1)?,
                        error: r.get(2)?,
                    },
                ))
            })
            .map_err(err)?;
        for a in rows {
            attempts.push(a.map_err(err)?);
        }
    }
    let sql = format!(
        "SELECT number, state, params, objective, intermediate, run_dir, seconds, error, worker,
                (heartbeat IS NULL OR heartbeat < {NOW} - ?1)
         FROM trials ORDER BY number"
    );
    let mut stmt = conn.prepare(&sql).map_err(err)?;
    let raw = stmt
        .query_map(params![grace.as_secs_f64()], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<f64>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<f64>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, bool>(9)?,
            ))
        })
        .map_err(err)?;
    let mut rows = Vec::new();
    for r in raw {
        let (number, state, values, objective, intermediate, run_dir, seconds, error, worker, old) =
            r.map_err(err)?;
        let number = number as usize;
        let c = Columns { location, number };
        let state: TrialState = c.parse("state", &state)?;
        // A store on one machine also knows when a worker's process is gone.
        let gone = state == TrialState::Running && worker.as_deref().is_some_and(worker_gone_here);
        let stale = state == TrialState::Running && (old || gone || worker.is_none());
        rows.push(Row {
            record: TrialRecord {
                trial: Trial {
                    number,
                    values: c.parse("params", &values)?,
                    state,
                    objective,
                    intermediate: c.parse("intermediate", &intermediate)?,
                },
                run_dir: PathBuf::from(run_dir),
                seconds,
                error,
                failed_attempts: attempts
                    .iter()
                    .filter(|(n, _)| *n == number)
                    .map(|(_, a)| a.clone())
                    .collect(),
            },
            worker,
            stale,
            gone,
        });
    }
    Ok(rows)
}

impl StudyStore for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn trials(&mut self) -> Result<Vec<TrialRecord>> {
        let location = self.location();
        let rows = load_rows(&self.conn, &location, Duration::ZERO)?;
        Ok(rows.into_iter().map(|r| r.record).collect())
    }

    fn claim(
        &mut self,
        req: &ClaimRequest<'_>,
        propose: &mut dyn FnMut(&[Trial]) -> Vec<Value>,
    ) -> Result<Claim> {
        let location = self.location();
        let err = |e: rusqlite::Error| Error::Storage(format!("{location}: {e}"));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let rows = load_rows(&tx, &location, req.grace)?;
        let claim = match decide(&rows, req) {
            Decision::TakeOver {
                number,
                lost_worker,
                reason,
            } => {
                tx.execute(
                    &format!("INSERT INTO trial_attempts (number, worker, error, at) VALUES (?1, ?2, ?3, {NOW})"),
                    params![number as i64, lost_worker, reason],
                )
                .map_err(err)?;
                let run_dir = req.dir.join(format!("trial-{number:03}"));
                tx.execute(
                    &format!("UPDATE trials SET worker = ?1, heartbeat = {NOW}, run_dir = ?2 WHERE number = ?3"),
                    params![req.worker, run_dir.display().to_string(), number as i64],
                )
                .map_err(err)?;
                let values = rows
                    .iter()
                    .find(|r| r.record.trial.number == number)
                    .map(|r| r.record.trial.values.clone())
                    .unwrap_or_default();
                Claim::Trial {
                    number,
                    values,
                    rerun: true,
                }
            }
            Decision::New => {
                let history: Vec<Trial> = rows.iter().map(|r| r.record.trial.clone()).collect();
                let number = next_trial_number(&history);
                let values = propose(&history[..]);
                let run_dir = req.dir.join(format!("trial-{number:03}"));
                tx.execute(
                    &format!(
                        "INSERT INTO trials (number, state, params, objective, intermediate, run_dir,
                         seconds, error, worker, heartbeat)
                         VALUES (?1, ?2, ?3, NULL, '[]', ?4, NULL, NULL, ?5, {NOW})"
                    ),
                    params![
                        number as i64,
                        to_json(&TrialState::Running)?,
                        to_json(&values)?,
                        run_dir.display().to_string(),
                        req.worker
                    ],
                )
                .map_err(err)?;
                Claim::Trial {
                    number,
                    values,
                    rerun: false,
                }
            }
            Decision::Wait => Claim::Wait,
            Decision::Done => Claim::Done,
        };
        tx.commit().map_err(err)?;
        Ok(claim)
    }

    fn save(&mut self, rec: &TrialRecord, worker: &str) -> Result<bool> {
        let n = self
            .conn
            .execute(
                &format!(
                    "UPDATE trials SET state = ?1, params = ?2, objective = ?3, intermediate = ?4,
                     run_dir = ?5, seconds = ?6, error = ?7, heartbeat = {NOW}
                     WHERE number = ?8 AND worker = ?9"
                ),
                params![
                    to_json(&rec.trial.state)?,
                    to_json(&rec.trial.values)?,
                    rec.trial.objective,
                    to_json(&rec.trial.intermediate)?,
                    rec.run_dir.display().to_string(),
                    rec.seconds,
                    rec.error,
                    rec.trial.number as i64,
                    worker,
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    fn heartbeat(&mut self, worker: &str) -> Result<()> {
        self.conn
            .execute(
                &format!("UPDATE trials SET heartbeat = {NOW} WHERE worker = ?1 AND state = ?2"),
                params![worker, to_json(&TrialState::Running)?],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn add_wall_s(&mut self, seconds: f64) -> Result<f64> {
        let location = self.location();
        let err = |e: rusqlite::Error| Error::Storage(format!("{location}: {e}"));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let before: f64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'wall_s'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(err)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('wall_s', ?1)
             ON CONFLICT(key) DO UPDATE SET value = ?1",
            params![(before + seconds).to_string()],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::store::worker_id;

    fn req<'a>(dir: &'a Path, worker: &'a str, budget: usize) -> ClaimRequest<'a> {
        ClaimRequest {
            budget,
            worker,
            grace: Duration::from_secs(3600),
            dir,
        }
    }

    #[test]
    fn an_unversioned_study_file_is_migrated_and_keeps_its_trials() {
        let tmp = tempfile::tempdir().unwrap();
        // The layout written before schema versions, with an interrupted trial.
        let conn = Connection::open(tmp.path().join(STATE_FILE)).unwrap();
        conn.execute_batch(MIGRATIONS[0].1).unwrap();
        conn.execute_batch(
            "INSERT INTO meta VALUES ('fingerprint', 'fp');
             INSERT INTO trials VALUES (0, '\"complete\"', '[]', 0.5, '[[1,0.5]]', 'd/trial-000', 3.0, NULL);
             INSERT INTO trials VALUES (1, '\"running\"', '[]', NULL, '[]', 'd/trial-001', NULL, NULL);",
        )
        .unwrap();
        drop(conn);
        let mut store = SqliteStore::open(tmp.path(), "fp").unwrap();
        assert_eq!(store.schema_version().unwrap(), 2);
        let trials = store.trials().unwrap();
        assert_eq!(trials.len(), 2);
        assert_eq!(trials[0].trial.objective, Some(0.5));
        // The interrupted trial (no worker recorded) is taken over at once, and its lost
        // attempt is recorded.
        let me = worker_id();
        let c = store
            .claim(&req(tmp.path(), &me, 2), &mut |_| unreachable!())
            .unwrap();
        assert!(
            matches!(
                c,
                Claim::Trial {
                    number: 1,
                    rerun: true,
                    ..
                }
            ),
            "{c:?}"
        );
        assert_eq!(store.trials().unwrap()[1].failed_attempts.len(), 1);
        // Reopening with another fingerprint is refused; the same one migrates nothing.
        assert!(SqliteStore::open(tmp.path(), "other").is_err());
        assert_eq!(
            SqliteStore::open(tmp.path(), "fp")
                .unwrap()
                .schema_version()
                .unwrap(),
            2
        );
    }

    #[test]
    fn two_connections_claiming_at_once_never_get_the_same_trial() {
        let tmp = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(tmp.path(), "fp").unwrap());
        let me = worker_id();
        let claimed: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut store = SqliteStore::open(tmp.path(), "fp").unwrap();
                        let mut mine = Vec::new();
                        while let Claim::Trial { number, .. } = store
                            .claim(&req(tmp.path(), &me, 20), &mut |_| vec![])
                            .unwrap()
                        {
                            mine.push(number);
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut sorted = claimed.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>(), "{claimed:?}");
    }

    #[test]
    fn a_taken_over_trial_refuses_its_old_workers_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(tmp.path(), "fp").unwrap();
        // A worker of another machine that stopped sending heartbeats.
        let far = "far-away-host:1";
        store
            .claim(&req(tmp.path(), far, 1), &mut |_| vec![])
            .unwrap();
        store
            .conn
            .execute("UPDATE trials SET heartbeat = 0", [])
            .unwrap();
        let me = worker_id();
        let short = ClaimRequest {
            grace: Duration::from_secs(1),
            ..req(tmp.path(), &me, 1)
        };
        let c = store.claim(&short, &mut |_| unreachable!()).unwrap();
        assert!(
            matches!(
                c,
                Claim::Trial {
                    number: 0,
                    rerun: true,
                    ..
                }
            ),
            "{c:?}"
        );
        let mut rec = store.trials().unwrap().remove(0);
        assert!(
            rec.failed_attempts[0].error.contains("no heartbeat"),
            "{rec:?}"
        );
        rec.trial.state = TrialState::Complete;
        assert!(!store.save(&rec, far).unwrap(), "the lost worker wrote");
        assert!(store.save(&rec, &me).unwrap());
        assert_eq!(store.claim(&short, &mut |_| vec![]).unwrap(), Claim::Done);
        assert_eq!(store.add_wall_s(2.0).unwrap(), 0.0);
        assert_eq!(store.add_wall_s(1.0).unwrap(), 2.0);
    }
}
