//! A study in PostgreSQL (`--storage postgresql://USER@HOST/DB --study NAME`), shared by
//! workers on any number of machines.
//!
//! Tables (all prefixed `tunekit_`, so the database can hold other things): `schema_version`,
//! `studies` (name, fingerprint, summed worker wall time), `trials` (one row per trial, with
//! its worker and heartbeat) and `trial_attempts` (attempts lost with their worker).
//! Migrations run under a transaction-scoped advisory lock, so workers starting together
//! migrate once. A claim locks the study's row (`SELECT … FOR UPDATE`): claims of one study
//! are serialised across machines, which is what lets the sampler see every trial (TPE reads
//! the full history inside the claim) and makes trial numbers unique; the primary key
//! `(study_id, number)` guards that too. Staleness is judged on the server's clock (`now()`),
//! so machines with skewed clocks agree.

use std::path::PathBuf;
use std::time::Duration;

use postgres::{Client, GenericClient};

use super::{
    Claim, ClaimRequest, Columns, Decision, FailedAttempt, Row, StudyStore, decide, redact_url,
    to_json,
};
use crate::error::{Error, Result};
use crate::search::study::TrialRecord;
use crate::search::{Trial, TrialState, Value, next_trial_number};

/// Key of the advisory lock taken while migrating ("tunekit" in ASCII).
const MIGRATION_LOCK: i64 = 0x0074_756e_656b_6974;

/// How long a connection attempt may take before the database counts as unreachable, when the
/// URL does not set `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Schema migrations, applied in order; `tunekit_schema_version` holds the last one applied.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE tunekit_studies (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        fingerprint TEXT NOT NULL,
        wall_s DOUBLE PRECISION NOT NULL DEFAULT 0,
        created TIMESTAMPTZ NOT NULL DEFAULT now());
     CREATE TABLE tunekit_trials (
        study_id BIGINT NOT NULL REFERENCES tunekit_studies(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        state TEXT NOT NULL,
        params TEXT NOT NULL,
        objective DOUBLE PRECISION,
        intermediate TEXT NOT NULL,
        run_dir TEXT NOT NULL,
        seconds DOUBLE PRECISION,
        error TEXT,
        worker TEXT,
        heartbeat TIMESTAMPTZ,
        PRIMARY KEY (study_id, number));
     CREATE TABLE tunekit_trial_attempts (
        id BIGSERIAL PRIMARY KEY,
        study_id BIGINT NOT NULL,
        number INTEGER NOT NULL,
        worker TEXT NOT NULL,
        error TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL DEFAULT now(),
        FOREIGN KEY (study_id, number) REFERENCES tunekit_trials(study_id, number)
            ON DELETE CASCADE);",
    ),
    // The experiment index of every machine (`crate::index_pg`).
    (
        2,
        "CREATE TABLE tunekit_runs (
            host TEXT NOT NULL,
            run_dir TEXT NOT NULL,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at BIGINT NOT NULL,
            finished_at BIGINT,
            train_time_s DOUBLE PRECISION,
            steps BIGINT,
            validation_accuracy DOUBLE PRECISION,
            validation_macro_f1 DOUBLE PRECISION,
            test_accuracy DOUBLE PRECISION,
            test_macro_f1 DOUBLE PRECISION,
            config TEXT NOT NULL,
            metrics TEXT,
            error TEXT,
            PRIMARY KEY (host, run_dir));",
    ),
];

/// A study in a PostgreSQL database.
pub struct PostgresStore {
    client: Client,
    /// The URL without its password, and the study name, for messages.
    location: String,
    study_id: i64,
}

/// Connect to `url` (a `postgresql://` URL), with a connect timeout unless the URL sets one,
/// over TLS as libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` (or `PGSSLMODE`…, or
/// `~/.postgresql/`) say ([`super::tls`]; libpq's default `prefer`: TLS when the server offers
/// it). Errors name the URL without its password.
pub fn connect(url: &str) -> Result<Client> {
    let shown = redact_url(url);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let (rest, tls) =
        super::tls::split_url(url, &shown, &|var| std::env::var(var).ok(), home.as_deref())?;
    let mut config: postgres::Config = rest.parse().map_err(|e: postgres::Error| {
        // The cause names the offending key, which a password with an unencoded `?`, `/` or
        // `@` can spill into: shown only when the URL holds no password.
        let why = if shown == url {
            describe(&e)
        } else {
            format!("{e} (percent-encode special characters in the password)")
        };
        Error::Config(format!("PostgreSQL {shown}: not a valid URL: {why}"))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // The address as TLS server name when the URL gives only `hostaddr`.
    if config.get_hosts().is_empty() {
        let addrs: Vec<String> = config
            .get_hostaddrs()
            .iter()
            .map(ToString::to_string)
            .collect();
        for a in addrs {
            config.host(&a);
        }
    }
    // libpq ignores sslmode on unix sockets; `disable` reads no certificate file.
    let unix_only = !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, postgres::config::Host::Tcp(_)));
    let result = if unix_only || tls.mode == super::tls::SslMode::Disable {
        config.ssl_mode(postgres::config::SslMode::Disable);
        config.connect(postgres::NoTls)
    } else {
        config.ssl_mode(tls.pg_mode());
        config.connect(tls.connector(&shown)?)
    };
    result.map_err(|e| {
        let hint = super::tls::tls_cause(&e).map_or("", super::tls::certificate_hint);
        Error::Storage(format!(
            "PostgreSQL {shown}: cannot connect: {}{hint}",
            describe(&e)
        ))
    })
}

/// A `postgres` error with its cause: the crate's own message is only the kind ("db error",
/// "error performing TLS handshake"); the server's message or rustls's reason is its source.
pub fn describe(e: &postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Apply the migrations `client`'s database lacks (under an advisory lock); returns the schema
/// version. Refuses a database migrated by a newer tunekit.
pub fn migrate(client: &mut Client, location: &str) -> Result<i32> {
    let err =
        |e: postgres::Error| Error::Storage(format!("{location}: migrating: {}", describe(&e)));
    let mut tx = client.transaction().map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err)?;
    // `CREATE TABLE IF NOT EXISTS` of an existing table is a NOTICE, which the client would
    // log on every connection after the first.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tunekit_schema_version (version INTEGER NOT NULL)",
    )
    .map_err(err)?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM tunekit_schema_version",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(err)?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(Error::Storage(format!(
            "{location}: schema version {current} is newer than this tunekit's ({latest}); use a \
             newer tunekit"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).map_err(err)?;
        tx.execute(
            "INSERT INTO tunekit_schema_version (version) VALUES ($1)",
            &[version],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    Ok(latest)
}

impl PostgresStore {
    /// Connect, migrate, and open (or create) the study `study`; refuse one made with another
    /// fingerprint.
    pub fn open(url: &str, study: &str, fingerprint: &str) -> Result<Self> {
        let mut client = connect(url)?;
        let location = format!("{} (study {study:?})", redact_url(url));
        migrate(&mut client, &location)?;
        let err = |e: postgres::Error| Error::Storage(format!("{location}: {}", describe(&e)));
        let mut tx = client.transaction().map_err(err)?;
        tx.execute(
            "INSERT INTO tunekit_studies (name, fingerprint) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
            &[&study, &fingerprint],
        )
        .map_err(err)?;
        let row = tx
            .query_one(
                "SELECT id, fingerprint FROM tunekit_studies WHERE name = $1",
                &[&study],
            )
            .map_err(err)?;
        let study_id: i64 = row.try_get(0).map_err(err)?;
        let stored: String = row.try_get(1).map_err(err)?;
        tx.commit().map_err(err)?;
        if stored != fingerprint {
            return Err(Error::Config(format!(
                "{location} holds a search with a different config or [search] section; join it \
                 with the same config, or give another --study"
            )));
        }
        Ok(PostgresStore {
            client,
            location,
            study_id,
        })
    }

    fn err(&self, e: postgres::Error) -> Error {
        Error::Storage(format!("{}: {}", self.location, describe(&e)))
    }
}

/// Every trial of study `study_id` with its worker and staleness (no heartbeat within
/// `grace`, on the server's clock), read in `c`'s transaction.
fn load_rows(
    c: &mut impl GenericClient,
    study_id: i64,
    location: &str,
    grace: Duration,
) -> Result<Vec<Row>> {
    let err = |e: postgres::Error| Error::Storage(format!("{location}: {}", describe(&e)));
    let mut attempts: Vec<(usize, FailedAttempt)> = Vec::new();
    for r in c
        .query(
            "SELECT number, worker, error FROM tunekit_trial_attempts WHERE study_id = $1
             ORDER BY id",
            &[&study_id],
        )
        .map_err(err)?
    {
        let number: i32 = r.try_get(0).map_err(err)?;
        attempts.push((
            number.max(0) as usize,
            FailedAttempt {
                worker: r.try_get(1).map_err(err)?,
                error: r.try_get(2).map_err(err)?,
            },
        ));
    }
    let running = to_json(&TrialState::Running)?;
    let mut rows = Vec::new();
    for r in c
        .query(
            "SELECT number, state, params, objective, intermediate, run_dir, seconds, error, worker,
                    state = $3 AND (heartbeat IS NULL
                                    OR heartbeat < now() - make_interval(secs => $2))
             FROM tunekit_trials WHERE study_id = $1 ORDER BY number",
            &[&study_id, &grace.as_secs_f64(), &running],
        )
        .map_err(err)?
    {
        let number: i32 = r.try_get(0).map_err(err)?;
        let number = number.max(0) as usize;
        let col = Columns { location, number };
        let state: String = r.try_get(1).map_err(err)?;
        let values: String = r.try_get(2).map_err(err)?;
        let intermediate: String = r.try_get(4).map_err(err)?;
        let run_dir: String = r.try_get(5).map_err(err)?;
        rows.push(Row {
            record: TrialRecord {
                trial: Trial {
                    number,
                    values: col.parse("params", &values)?,
                    state: col.parse("state", &state)?,
                    objective: r.try_get(3).map_err(err)?,
                    intermediate: col.parse("intermediate", &intermediate)?,
                },
                run_dir: PathBuf::from(run_dir),
                seconds: r.try_get(6).map_err(err)?,
                error: r.try_get(7).map_err(err)?,
                failed_attempts: attempts
                    .iter()
                    .filter(|(n, _)| *n == number)
                    .map(|(_, a)| a.clone())
                    .collect(),
            },
            worker: r.try_get(8).map_err(err)?,
            stale: r.try_get(9).map_err(err)?,
            // Judged by heartbeat alone: the rule is the same on every machine.
            gone: false,
        });
    }
    Ok(rows)
}

/// A trial number as the `INTEGER` column stores it.
fn column_number(n: usize, location: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::Storage(format!("{location}: trial number {n} too large")))
}

impl StudyStore for PostgresStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn trials(&mut self) -> Result<Vec<TrialRecord>> {
        let rows = load_rows(
            &mut self.client,
            self.study_id,
            &self.location,
            Duration::ZERO,
        )?;
        Ok(rows.into_iter().map(|r| r.record).collect())
    }

    fn claim(
        &mut self,
        req: &ClaimRequest<'_>,
        propose: &mut dyn FnMut(&[Trial]) -> Vec<Value>,
    ) -> Result<Claim> {
        let location = self.location.clone();
        let err = |e: postgres::Error| Error::Storage(format!("{location}: {}", describe(&e)));
        let study_id = self.study_id;
        let mut tx = self.client.transaction().map_err(err)?;
        // Serialise claims of this study across every worker.
        tx.execute(
            "SELECT id FROM tunekit_studies WHERE id = $1 FOR UPDATE",
            &[&study_id],
        )
        .map_err(err)?;
        let rows = load_rows(&mut tx, study_id, &location, req.grace)?;
        let running = to_json(&TrialState::Running)?;
        let claim = match decide(&rows, req) {
            Decision::TakeOver {
                number,
                lost_worker,
                reason,
            } => {
                let n = column_number(number, &location)?;
                let run_dir = req.dir.join(format!("trial-{number:03}"));
                // Conditional on the trial still running: its worker may have saved its end
                // since the rows were read (saves do not take the study lock).
                let taken = tx
                    .execute(
                        "UPDATE tunekit_trials SET worker = $1, heartbeat = now(), run_dir = $2
                         WHERE study_id = $3 AND number = $4 AND state = $5
                           AND worker IS NOT DISTINCT FROM $6",
                        &[
                            &req.worker,
                            &run_dir.display().to_string(),
                            &study_id,
                            &n,
                            &running,
                            &rows
                                .iter()
                                .find(|r| r.record.trial.number == number)
                                .and_then(|r| r.worker.clone()),
                        ],
                    )
                    .map_err(err)?;
                if taken == 1 {
                    tx.execute(
                        "INSERT INTO tunekit_trial_attempts (study_id, number, worker, error)
                         VALUES ($1, $2, $3, $4)",
                        &[&study_id, &n, &lost_worker, &reason],
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
                } else {
                    Claim::Wait
                }
            }
            Decision::New => {
                let history: Vec<Trial> = rows.iter().map(|r| r.record.trial.clone()).collect();
                let number = next_trial_number(&history);
                let values = propose(&history[..]);
                let run_dir = req.dir.join(format!("trial-{number:03}"));
                tx.execute(
                    "INSERT INTO tunekit_trials (study_id, number, state, params, intermediate,
                        run_dir, worker, heartbeat)
                     VALUES ($1, $2, $3, $4, '[]', $5, $6, now())",
                    &[
                        &study_id,
                        &column_number(number, &location)?,
                        &running,
                        &to_json(&values)?,
                        &run_dir.display().to_string(),
                        &req.worker,
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
        let n = column_number(rec.trial.number, &self.location)?;
        let params = [
            to_json(&rec.trial.state)?,
            to_json(&rec.trial.values)?,
            to_json(&rec.trial.intermediate)?,
            rec.run_dir.display().to_string(),
        ];
        let updated = self
            .client
            .execute(
                "UPDATE tunekit_trials SET state = $1, params = $2, objective = $3,
                    intermediate = $4, run_dir = $5, seconds = $6, error = $7, heartbeat = now()
                 WHERE study_id = $8 AND number = $9 AND worker = $10",
                &[
                    &params[0],
                    &params[1],
                    &rec.trial.objective,
                    &params[2],
                    &params[3],
                    &rec.seconds,
                    &rec.error,
                    &self.study_id,
                    &n,
                    &worker,
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(updated == 1)
    }

    fn heartbeat(&mut self, worker: &str) -> Result<()> {
        let running = to_json(&TrialState::Running)?;
        self.client
            .execute(
                "UPDATE tunekit_trials SET heartbeat = now()
                 WHERE study_id = $1 AND worker = $2 AND state = $3",
                &[&self.study_id, &worker, &running],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn shares_runs(&self) -> bool {
        true
    }

    fn record_run(&mut self, row: &crate::index::RunRow) -> Result<()> {
        crate::index_pg::upsert(&mut self.client, &self.location, row)
    }

    fn add_wall_s(&mut self, seconds: f64) -> Result<f64> {
        let row = self
            .client
            .query_one(
                "UPDATE tunekit_studies SET wall_s = wall_s + $1 WHERE id = $2
                 RETURNING wall_s - $1",
                &[&seconds, &self.study_id],
            )
            .map_err(|e| self.err(e))?;
        row.try_get(0).map_err(|e| self.err(e))
    }
}
