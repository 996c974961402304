//! The experiment index in PostgreSQL (`tunekit_runs`), beside a shared search study, so a team
//! sees the runs of every machine: the trials of a search with `--storage postgresql://…` are
//! recorded there as they finish, `tunekit runs push --index URL` copies a runs directory's
//! `index.sqlite` there, and `tunekit runs list|show|compare --index URL` reads it. The local
//! `index.sqlite` stays the default and is always written.
//!
//! A run is identified by `(host, run_dir)`: two machines may use the same relative run
//! directory.

use crate::error::{Error, Result};
use crate::index::{Outcome, RunRow};
use crate::search::store::{host_name, postgres, redact_url};

/// The experiment index in a PostgreSQL database.
pub struct PgRunIndex {
    client: ::postgres::Client,
    location: String,
}

const COLUMNS: &str = "name, host || ':' || run_dir, kind, status, started_at, finished_at, \
     train_time_s, steps, validation_accuracy, validation_macro_f1, test_accuracy, \
     test_macro_f1, config, metrics, error";

impl PgRunIndex {
    /// Connect to `url` and migrate its tunekit tables.
    ///
    /// Errors: a bad URL or unreachable database ([`Error::Config`] / [`Error::Storage`], the
    /// URL shown without its password).
    pub fn open(url: &str) -> Result<Self> {
        let mut client = postgres::connect(url)?;
        let location = format!("{} (experiment index)", redact_url(url));
        postgres::migrate(&mut client, &location)?;
        Ok(PgRunIndex { client, location })
    }

    /// Where the index is, without a password.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn err(&self, e: ::postgres::Error) -> Error {
        Error::Storage(format!("{}: {}", self.location, postgres::describe(&e)))
    }

    /// Insert or replace `row` as a run of this machine.
    pub fn upsert(&mut self, row: &RunRow) -> Result<()> {
        upsert(&mut self.client, &self.location, row)
    }

    fn row(&self, r: &::postgres::Row) -> Result<RunRow> {
        let g = |e: ::postgres::Error| {
            Error::Storage(format!("{}: {}", self.location, postgres::describe(&e)))
        };
        Ok(RunRow {
            name: r.try_get(0).map_err(g)?,
            run_dir: r.try_get(1).map_err(g)?,
            kind: r.try_get(2).map_err(g)?,
            status: r.try_get(3).map_err(g)?,
            started_at: r.try_get(4).map_err(g)?,
            finished_at: r.try_get(5).map_err(g)?,
            outcome: Outcome {
                train_time_s: r.try_get(6).map_err(g)?,
                steps: r.try_get(7).map_err(g)?,
                validation_accuracy: r.try_get(8).map_err(g)?,
                validation_macro_f1: r.try_get(9).map_err(g)?,
                test_accuracy: r.try_get(10).map_err(g)?,
                test_macro_f1: r.try_get(11).map_err(g)?,
                metrics: r.try_get(13).map_err(g)?,
            },
            config: r.try_get(12).map_err(g)?,
            error: r.try_get(14).map_err(g)?,
        })
    }

    /// All runs of every machine, oldest first; `run_dir` is `host:run_dir`.
    pub fn list(&mut self) -> Result<Vec<RunRow>> {
        let rows = self
            .client
            .query(
                &format!("SELECT {COLUMNS} FROM tunekit_runs ORDER BY started_at, host, run_dir"),
                &[],
            )
            .map_err(|e| self.err(e))?;
        rows.iter().map(|r| self.row(r)).collect()
    }

    /// The run with this name, run directory or `host:run_dir` (the latest, if reused).
    pub fn get(&mut self, name_or_dir: &str) -> Result<RunRow> {
        let row = self
            .client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM tunekit_runs
                     WHERE name = $1 OR run_dir = $1 OR host || ':' || run_dir = $1
                     ORDER BY started_at DESC LIMIT 1"
                ),
                &[&name_or_dir],
            )
            .map_err(|e| self.err(e))?;
        match row {
            Some(r) => self.row(&r),
            None => Err(Error::Config(format!(
                "{}: no run named {name_or_dir:?} (tunekit runs list shows them)",
                self.location
            ))),
        }
    }
}

/// Insert or replace `row` as a run of this machine in `client`'s `tunekit_runs`.
pub(crate) fn upsert(client: &mut ::postgres::Client, location: &str, row: &RunRow) -> Result<()> {
    let o = &row.outcome;
    client
        .execute(
            "INSERT INTO tunekit_runs (host, run_dir, name, kind, status, started_at,
                    finished_at, train_time_s, steps, validation_accuracy, validation_macro_f1,
                    test_accuracy, test_macro_f1, config, metrics, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                 ON CONFLICT (host, run_dir) DO UPDATE SET name = $3, kind = $4, status = $5,
                    started_at = $6, finished_at = $7, train_time_s = $8, steps = $9,
                    validation_accuracy = $10, validation_macro_f1 = $11, test_accuracy = $12,
                    test_macro_f1 = $13, config = $14, metrics = $15, error = $16",
            &[
                &host_name(),
                &row.run_dir,
                &row.name,
                &row.kind,
                &row.status,
                &row.started_at,
                &row.finished_at,
                &o.train_time_s,
                &o.steps,
                &o.validation_accuracy,
                &o.validation_macro_f1,
                &o.test_accuracy,
                &o.test_macro_f1,
                &row.config,
                &o.metrics,
                &row.error,
            ],
        )
        .map(|_| ())
        .map_err(|e| Error::Storage(format!("{location}: {}", postgres::describe(&e))))
}
