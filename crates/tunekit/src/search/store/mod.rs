//! Where a study's trials live: the seam between the search ([`super::study`]) and its
//! database.
//!
//! A [`StudyStore`] holds one study's trials and lets any number of workers (threads of one
//! process, processes on several machines) share it:
//!
//! - [`StudyStore::claim`] is the only way a trial starts. In one transaction it either takes
//!   over a running trial whose worker stopped sending heartbeats (recording the lost attempt
//!   as a [`FailedAttempt`]), or inserts the next trial with values proposed from the full
//!   history of every worker, or says to wait (others are still running trials) or that the
//!   study is done. Claims are serialised by the store, so no trial runs twice and none is
//!   lost.
//! - [`StudyStore::save`] writes a trial's progress only while its worker still owns it: a
//!   worker presumed dead that wakes up cannot overwrite the trial another worker took over.
//! - [`StudyStore::heartbeat`] is called every `search.heartbeat_interval` seconds for the
//!   worker's running trials (Optuna's `heartbeat_interval`; a trial is stale after
//!   `search.grace_period` seconds without one).
//!
//! Two stores: [`sqlite::SqliteStore`] (the default, `STUDY/search.sqlite`) and
//! [`postgres::PostgresStore`] (`--storage postgresql://…`). The decision of what a claim
//! does is shared ([`decide`]); each store only supplies the transaction, the rows and
//! whether each running trial is stale. To add a store, implement [`StudyStore`] in a new
//! file here and add its URL scheme to [`open`].

pub mod postgres;
pub mod sqlite;
pub mod tls;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::study::TrialRecord;
use super::{Trial, TrialState, Value};
use crate::error::{Error, Result};

/// Seconds between heartbeats of a running trial when `search.heartbeat_interval` is not set.
pub const DEFAULT_HEARTBEAT_INTERVAL_S: f64 = 30.0;
/// Seconds without a heartbeat after which a running trial is taken over, when
/// `search.grace_period` is not set (Optuna's default: twice the interval).
pub const DEFAULT_GRACE_PERIOD_S: f64 = 120.0;

/// One attempt at a trial that did not finish: its worker was lost (killed, machine down)
/// and another worker took the trial over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    /// The worker that was running it (`host:pid`).
    pub worker: String,
    /// Why the attempt counts as failed.
    pub error: String,
}

/// What a worker asks for when it wants a trial.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// The study's trial budget (`search.trials`): no trial is proposed beyond it.
    pub budget: usize,
    /// This worker's id (`host:pid`).
    pub worker: &'a str,
    /// A running trial of another worker without a heartbeat for this long is stale.
    pub grace: Duration,
    /// The study directory of this worker: a trial it claims runs in `trial-NNN` below it.
    pub dir: &'a Path,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Run this trial; `rerun` when it was taken over from a lost worker (continue from its
    /// checkpoint when the run directory has one).
    Trial {
        /// Trial number.
        number: usize,
        /// Its parameter values.
        values: Vec<Value>,
        /// Taken over from a lost worker.
        rerun: bool,
    },
    /// No trial to start now, but other workers are running some: ask again later (one of
    /// them may be lost and become stale).
    Wait,
    /// The budget is spent and every trial has finished.
    Done,
}

/// A study's trials in a database shared by its workers. Every method is one transaction.
pub trait StudyStore: Send {
    /// Where the study is, for messages (a URL without its password, or a file path).
    fn location(&self) -> String;

    /// Every trial of the study, by number, with its failed attempts.
    fn trials(&mut self) -> Result<Vec<TrialRecord>>;

    /// Claim a trial for `req.worker`, atomically across every worker (see [`decide`]).
    /// `propose` gives the values of a new trial from the history of all trials, the new
    /// trial's number being [`super::next_trial_number`] of that history.
    fn claim(
        &mut self,
        req: &ClaimRequest<'_>,
        propose: &mut dyn FnMut(&[Trial]) -> Vec<Value>,
    ) -> Result<Claim>;

    /// Write trial `rec.trial.number`'s state, objective, intermediate values, time and error
    /// (and refresh its heartbeat) if `worker` still owns it; `false` when another worker has
    /// taken it over, and nothing was written.
    fn save(&mut self, rec: &TrialRecord, worker: &str) -> Result<bool>;

    /// Refresh the heartbeat of every running trial of `worker`.
    fn heartbeat(&mut self, worker: &str) -> Result<()>;

    /// Add `seconds` to the study's recorded wall time; returns the total before.
    fn add_wall_s(&mut self, seconds: f64) -> Result<f64>;

    /// Record a finished trial's experiment-index row where every machine sees it (PostgreSQL:
    /// `tunekit_runs`); the default does nothing (the study directory's `index.sqlite` already
    /// has it).
    fn record_run(&mut self, _row: &crate::index::RunRow) -> Result<()> {
        Ok(())
    }

    /// Whether [`StudyStore::record_run`] records anything.
    fn shares_runs(&self) -> bool {
        false
    }
}

/// Open the study store named by `storage` (`None`: `dir/search.sqlite`;
/// `postgresql://user[:password]@host[:port]/db`: the study `study` in that database),
/// checking that a study already there was made with the same `fingerprint`.
///
/// Errors: an unsupported URL, an unreachable database or a different study under the same
/// name are [`Error::Storage`] / [`Error::Config`], whose messages never show a password.
pub fn open(
    storage: Option<&str>,
    study: &str,
    dir: &Path,
    fingerprint: &str,
) -> Result<Box<dyn StudyStore>> {
    match storage.map(str::trim) {
        None | Some("") => Ok(Box::new(sqlite::SqliteStore::open(dir, fingerprint)?)),
        Some(url) if url.starts_with("postgresql://") || url.starts_with("postgres://") => Ok(
            Box::new(postgres::PostgresStore::open(url, study, fingerprint)?),
        ),
        Some(other) => Err(Error::Config(format!(
            "search.storage = {:?}: not a supported study store; give postgresql://USER@HOST/DB \
             (or leave it out for STUDY/{})",
            redact_url(other),
            super::study::STATE_FILE
        ))),
    }
}

/// `url` with any password replaced by `***` (the user-info password and a `password=` query
/// parameter), for messages and logs.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let at = rest + at;
            if let Some(colon) = out[rest..at].find(':') {
                out.replace_range(rest + colon + 1..at, "***");
            }
        }
    }
    // Key-value forms: `password=…` up to the next `&` or space.
    let lower = out.to_ascii_lowercase();
    if let Some(p) = lower.find("password=") {
        let start = p + "password=".len();
        let end = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |i| start + i);
        out.replace_range(start..end, "***");
    }
    out
}

/// This process's worker id: `host:pid`. Threads of one process (`--jobs N`) share it.
pub fn worker_id() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

/// The machine's host name (Linux: the kernel's; elsewhere `$HOSTNAME`, else `localhost`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// Whether the process of worker `worker` is known to be gone: it ran on this machine and
/// its pid no longer exists (Linux `/proc`). `false` when that cannot be told (another
/// machine, no `/proc`): only the heartbeat decides then.
pub fn worker_gone_here(worker: &str) -> bool {
    let Some((host, pid)) = worker.rsplit_once(':') else {
        return false;
    };
    if host != host_name() || pid.parse::<u32>().is_err() {
        return false;
    }
    Path::new("/proc/self").exists() && !Path::new("/proc").join(pid).exists()
}

/// A stored trial as a claim sees it.
#[derive(Debug, Clone)]
pub struct Row {
    /// The trial.
    pub record: TrialRecord,
    /// Its worker, when one claimed it (rows from before heartbeats have none).
    pub worker: Option<String>,
    /// Running and stale: no heartbeat within the grace period (or, for stores local to one
    /// machine, a worker process that is gone).
    pub stale: bool,
    /// Stale because its worker's process is known to be gone (stores local to one machine).
    pub gone: bool,
}

/// What a claim does, given every stored trial (the store applies it in the same
/// transaction it read `rows` in).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Take over running trial `number` from its lost worker, recording `reason`.
    TakeOver {
        /// The stale trial.
        number: usize,
        /// Its lost worker (empty when unknown).
        lost_worker: String,
        /// Why it counts as failed.
        reason: String,
    },
    /// Insert a new trial (number: one past the largest).
    New,
    /// Other workers are running trials; ask again later.
    Wait,
    /// Budget spent and no other worker runs a trial (this worker's own running trials are
    /// finished by the threads running them).
    Done,
}

/// The claim rule shared by every store: a stale trial of another worker first (lowest
/// number), then a new trial while fewer than `budget` exist, then wait while another
/// worker runs a trial, else done.
pub fn decide(rows: &[Row], req: &ClaimRequest<'_>) -> Decision {
    if let Some(r) = rows.iter().find(|r| {
        r.record.trial.state == TrialState::Running
            && r.stale
            && r.worker.as_deref() != Some(req.worker)
    }) {
        let lost_worker = r.worker.clone().unwrap_or_default();
        let reason = if lost_worker.is_empty() {
            "interrupted (its worker left no heartbeat)".to_string()
        } else if r.gone {
            format!("worker {lost_worker} lost: its process is gone")
        } else {
            format!(
                "worker {lost_worker} lost: no heartbeat for over {:.0} s",
                req.grace.as_secs_f64()
            )
        };
        return Decision::TakeOver {
            number: r.record.trial.number,
            lost_worker,
            reason,
        };
    }
    if rows.len() < req.budget {
        Decision::New
    } else if rows.iter().any(|r| {
        r.record.trial.state == TrialState::Running && r.worker.as_deref() != Some(req.worker)
    }) {
        Decision::Wait
    } else {
        Decision::Done
    }
}

/// A trial's text columns (state, params, intermediate) parsed, naming `location` and the
/// trial in errors.
pub(crate) struct Columns<'a> {
    pub location: &'a str,
    pub number: usize,
}

impl Columns<'_> {
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(&self, what: &str, s: &str) -> Result<T> {
        serde_json::from_str(s).map_err(|_| {
            Error::Storage(format!(
                "{}: trial {}: bad {what}: {s}",
                self.location, self.number
            ))
        })
    }
}

/// serde_json for the few shapes stored as JSON text columns.
pub(crate) fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn row(number: usize, state: TrialState, worker: Option<&str>, stale: bool) -> Row {
        Row {
            record: TrialRecord {
                trial: Trial {
                    number,
                    values: vec![],
                    state,
                    objective: None,
                    intermediate: vec![],
                },
                run_dir: PathBuf::new(),
                seconds: None,
                error: None,
                failed_attempts: vec![],
            },
            worker: worker.map(str::to_string),
            stale,
            gone: false,
        }
    }

    fn req(budget: usize) -> ClaimRequest<'static> {
        ClaimRequest {
            budget,
            worker: "me:1",
            grace: Duration::from_secs(5),
            dir: Path::new("."),
        }
    }

    #[test]
    fn parameters_read_back_from_the_store_are_the_same_bits() {
        // serde_json's `float_roundtrip`: without it, some of these land one ulp away and a
        // taken-over trial (or --resume) would see a changed learning rate.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x >> 2 | 0x3c00_0000_0000_0000); // 2^-63 … 2, as learning rates
            let text = to_json(&vec![Value::Float(v)]).unwrap();
            let back: Vec<Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(back, vec![Value::Float(v)], "{text}");
        }
    }

    #[test]
    fn a_claim_takes_over_stale_trials_first_then_proposes_then_waits_then_is_done() {
        use TrialState::*;
        let live = row(0, Running, Some("other:2"), false);
        let stale = row(1, Running, Some("other:3"), true);
        let done = row(2, Complete, Some("other:3"), true);
        // My own running trial is never taken over, stale or not.
        let mine = row(3, Running, Some("me:1"), true);
        let d = decide(&[live.clone(), stale, done.clone(), mine.clone()], &req(4));
        assert!(
            matches!(&d, Decision::TakeOver { number: 1, lost_worker, reason }
                if lost_worker == "other:3" && reason.contains("no heartbeat")),
            "{d:?}"
        );
        assert_eq!(
            decide(&[live.clone(), done.clone()], &req(3)),
            Decision::New
        );
        assert_eq!(
            decide(&[live.clone(), done.clone(), mine.clone()], &req(3)),
            Decision::Wait
        );
        // Only my own trials still run: nothing to wait for.
        assert_eq!(
            decide(&[done.clone(), mine.clone()], &req(2)),
            Decision::Done
        );
        assert_eq!(decide(std::slice::from_ref(&done), &req(1)), Decision::Done);
        // Rows from before heartbeats (no worker) that are running are interrupted trials.
        let old = row(0, Running, None, true);
        assert!(matches!(
            decide(&[old], &req(1)),
            Decision::TakeOver { number: 0, .. }
        ));
    }

    #[test]
    fn passwords_never_appear_in_redacted_urls() {
        assert_eq!(
            redact_url("postgresql://tk:s3cret@db.example:5432/studies"),
            "postgresql://tk:***@db.example:5432/studies"
        );
        assert_eq!(
            redact_url("postgresql://tk@db/studies?sslmode=disable&password=s3cret"),
            "postgresql://tk@db/studies?sslmode=disable&password=***"
        );
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
        // A password containing '@' or '/' is still hidden up to the last '@' of the authority.
        let r = redact_url("postgresql://u:p@ss@h/d");
        assert!(!r.contains("p@ss") && r.ends_with("@h/d"), "{r}");
    }

    #[test]
    fn a_worker_of_this_machine_whose_process_is_gone_is_known_gone() {
        assert!(!worker_gone_here(&worker_id()));
        assert!(!worker_gone_here("another-machine.example:1"));
        if Path::new("/proc/self").exists() {
            // pid_max is at most 2^22 on Linux.
            assert!(worker_gone_here(&format!("{}:99999999", host_name())));
        }
    }
}
