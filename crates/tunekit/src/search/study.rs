//! `tunekit search`: a study of trials over a `[search]` section, each trial a normal run
//! directory (`STUDY/trial-NNN/`, with its own report and index entry), the study's state in a
//! [`StudyStore`] (SQLite `STUDY/search.sqlite` by default, or PostgreSQL shared by workers on
//! several machines) so an interrupted search resumes without redoing finished trials, and
//! several trials at once (`--jobs N`), each on its own share of the cores.
//!
//! Why trials run in-process (threads with their own rayon pools) rather than as child
//! processes: the pruner needs every trial's intermediate values as they are reported, and the
//! sampler needs the finished ones; the store gives both, to threads and to other processes
//! alike. A trial that fails is recorded as failed and the search goes on; a trial whose worker
//! is lost (no heartbeat) is taken over by another worker, its lost attempt recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::store::{self, Claim, ClaimRequest, FailedAttempt, StudyStore};
use super::{
    Direction, GridSampler, MedianPruner, NoPruner, Pruner, RandomSampler, Sampler, SearchSpace,
    SuccessiveHalvingPruner, TpeOptions, TpeSampler, Trial, TrialState, Value, best_trial,
    importance,
};
use crate::config::{RunConfig, apply_override};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::train::{EvalHook, RunMetrics, TrainOptions, train};

/// The study's state database in the study directory.
pub const STATE_FILE: &str = "search.sqlite";

/// Which sampler proposes trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Every combination (continuous parameters at `grid_points` points), in order.
    Grid,
    /// Independent draws from each parameter's range.
    Random,
    /// Tree-structured Parzen estimator (Optuna's default sampler).
    #[default]
    Tpe,
}

/// Which pruner stops unpromising trials after an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrunerKind {
    /// Never stop a trial early.
    #[default]
    None,
    /// Stop when the best value so far is worse than the median of completed trials at the
    /// same evaluation.
    Median,
    /// Asynchronous successive halving (ASHA's rule): keep the top 1/η at each rung.
    SuccessiveHalving,
}

/// The `[search]` section of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSection {
    /// Number of trials (the baseline trial included).
    pub trials: usize,
    /// `grid`, `random` or `tpe`.
    #[serde(default)]
    pub sampler: SamplerKind,
    /// `none`, `median` or `successive_halving`.
    #[serde(default)]
    pub pruner: PrunerKind,
    /// The validation metric to optimise (default: `train.metric`); trials also select their
    /// best checkpoint by it.
    #[serde(default)]
    pub objective: Option<String>,
    /// `maximize` or `minimize` (default: minimise `loss`, maximise anything else).
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Sampler seed (default: `train.seed`).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Grid points per continuous parameter (grid sampler).
    #[serde(default = "default_grid_points")]
    pub grid_points: usize,
    /// Random trials before TPE models the results (default: min(10, max(2, trials / 3));
    /// Optuna's fixed 10 would leave a 12-trial search almost entirely random).
    #[serde(default)]
    pub tpe_startup_trials: Option<usize>,
    /// Completed trials before the median pruner acts (Optuna: 5).
    #[serde(default = "default_prune_startup")]
    pub prune_startup_trials: usize,
    /// Evaluations before any pruning (Optuna's `n_warmup_steps`).
    #[serde(default)]
    pub prune_warmup_evaluations: usize,
    /// η of successive halving.
    #[serde(default = "default_reduction_factor")]
    pub reduction_factor: usize,
    /// Make trial 0 the config's own values of the searched keys (Optuna's `enqueue_trial`),
    /// so the search is measured against the recipe it starts from.
    #[serde(default = "default_true")]
    pub baseline: bool,
    /// Config key → distribution: `loguniform(lo, hi)`, `uniform(lo, hi)`, `int(lo, hi)`,
    /// `logint(lo, hi)`, `choice([...])`.
    pub params: BTreeMap<String, String>,
    /// Where the study's trials are kept: unset for `STUDY/search.sqlite`, or
    /// `postgresql://USER@HOST/DB` for a study that workers on several machines join
    /// (`--storage` overrides it). Not part of the study's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// The study's name in a shared store (default: `run.name`; `--study` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study: Option<String>,
    /// Seconds between heartbeats of a running trial (Optuna's `heartbeat_interval`;
    /// default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<f64>,
    /// Seconds without a heartbeat after which another worker takes a running trial over
    /// (Optuna's `grace_period`; default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<f64>,
}

fn default_grid_points() -> usize {
    3
}
fn default_prune_startup() -> usize {
    5
}
fn default_reduction_factor() -> usize {
    3
}
fn default_true() -> bool {
    true
}

/// A search read from a config: the base run config and the search over it.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// The config without its `[search]` section (overrides applied), as TOML text.
    pub base_text: String,
    /// The base config, validated.
    pub base: RunConfig,
    /// The `[search]` section.
    pub search: SearchSection,
    /// Its parameters, parsed.
    pub space: SearchSpace,
    /// Where the config came from, for error messages.
    pub origin: String,
}

impl SearchConfig {
    /// Read `path`, apply `--set` overrides, split off and validate `[search]`.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::Config(format!("{origin}: {e}")))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let search = table.remove("search").ok_or_else(|| {
            Error::Config(format!(
                "{origin}: no [search] section: tunekit search needs one (trials, sampler, params)"
            ))
        })?;
        let search: SearchSection = serde_path_to_error::deserialize(search).map_err(|e| {
            Error::Config(format!("{origin}: [search] {}: {}", e.path(), e.inner()))
        })?;
        if search.trials == 0 {
            return Err(Error::Config(format!(
                "{origin}: search.trials must be at least 1"
            )));
        }
        let base_text = toml::to_string(&table)
            .map_err(|e| Error::Config(format!("{origin}: serialising config: {e}")))?;
        let mut base = RunConfig::parse(&base_text, &origin, &[])?;
        if base.privacy.dp.is_some() {
            // Every trial trains on the same examples and the best is picked by validation:
            // the trials' ε compose (and the selection leaks), which no accountant here counts.
            return Err(Error::Config(format!(
                "{origin}: [privacy.dp] (differential privacy) refuses `tunekit search`: each trial spends its own ε on the same training data and picking the best trial leaks too, and the study does not account for that composition; search without [privacy.dp] on public or synthetic data, then train once with it"
            )));
        }
        if let Some(o) = &search.objective {
            base.train.metric = o.clone();
        }
        let space = SearchSpace::from_texts(search.params.iter())?;
        // Every trial config must parse: check the extremes of each parameter now, not after
        // an hour of trials.
        let cfg = SearchConfig {
            base_text,
            base,
            search,
            space,
            origin,
        };
        for point in cfg.space.grid(2).into_iter().take(64) {
            cfg.trial_config(&point, Path::new("."))?;
        }
        cfg.heartbeat()?;
        Ok(cfg)
    }

    /// Objective direction: stated, or from the metric.
    pub fn direction(&self) -> Direction {
        self.search
            .direction
            .unwrap_or(if self.base.train.metric == "loss" {
                Direction::Minimize
            } else {
                Direction::Maximize
            })
    }

    fn overrides(&self, values: &[Value]) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .space
            .overrides(values)?
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if let Some(o) = &self.search.objective {
            out.push(format!("train.metric={}", toml::Value::String(o.clone())));
        }
        Ok(out)
    }

    /// The run config of one trial, named after its directory.
    pub fn trial_config(&self, values: &[Value], dir: &Path) -> Result<RunConfig> {
        let mut o = self.overrides(values)?;
        let name = dir
            .file_name()
            .map_or_else(|| "trial".to_string(), |n| n.to_string_lossy().into_owned());
        o.push(format!("run.name={}", toml::Value::String(name)));
        if let Some(parent) = dir.parent() {
            o.push(format!(
                "run.dir={}",
                toml::Value::String(parent.display().to_string())
            ));
        }
        RunConfig::parse(&self.base_text, &self.origin, &o)
    }

    /// The base config's own values of the searched keys, when each lies in its range.
    pub fn baseline_values(&self) -> Result<Option<Vec<Value>>> {
        let resolved: toml::Table = self
            .base
            .to_toml()?
            .parse()
            .map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
        let mut values = Vec::new();
        for p in &self.space.params {
            let mut cur: Option<&toml::Value> = None;
            let mut table = Some(&resolved);
            for part in p.key.split('.') {
                cur = table.and_then(|t| t.get(part));
                table = cur.and_then(|v| v.as_table());
            }
            let Some(v) = cur.and_then(|v| value_in(&p.dist, v)) else {
                tracing::warn!(
                    "search.baseline: the config does not set {} (or not to a value of {}); trial 0 is sampled",
                    p.key,
                    p.dist
                );
                return Ok(None);
            };
            if !p.dist.contains(&v) {
                tracing::warn!(
                    "search.baseline: the config's {} = {} lies outside {}; trial 0 is sampled",
                    p.key,
                    v.display(&p.dist),
                    p.dist
                );
                return Ok(None);
            }
            values.push(v);
        }
        Ok(Some(values))
    }

    fn sampler(&self) -> Box<dyn Sampler + Send> {
        let seed = self.search.seed.unwrap_or(self.base.train.seed);
        match self.search.sampler {
            SamplerKind::Grid => Box::new(GridSampler::new(self.search.grid_points, seed)),
            SamplerKind::Random => Box::new(RandomSampler::new(seed)),
            SamplerKind::Tpe => {
                let startup = self
                    .search
                    .tpe_startup_trials
                    .unwrap_or_else(|| (self.search.trials / 3).clamp(2, 10));
                Box::new(TpeSampler::with_options(
                    seed,
                    TpeOptions {
                        n_startup_trials: startup,
                        ..TpeOptions::default()
                    },
                ))
            }
        }
    }

    fn pruner(&self) -> Box<dyn Pruner + Send + Sync> {
        match self.search.pruner {
            PrunerKind::None => Box::new(NoPruner),
            PrunerKind::Median => Box::new(MedianPruner {
                n_startup_trials: self.search.prune_startup_trials,
                n_warmup_steps: self.search.prune_warmup_evaluations,
                interval_steps: 1,
            }),
            PrunerKind::SuccessiveHalving => Box::new(SuccessiveHalvingPruner {
                min_resource: self.search.prune_warmup_evaluations.max(1),
                reduction_factor: self.search.reduction_factor,
                min_early_stopping_rate: 0,
            }),
        }
    }

    /// `(heartbeat interval, grace period)` from `search.heartbeat_interval` /
    /// `search.grace_period` (seconds; defaults 30 and 120).
    ///
    /// Errors: a value that is not a positive number of seconds, or a grace period not longer
    /// than the interval (every live trial would look lost).
    pub fn heartbeat(&self) -> Result<(Duration, Duration)> {
        let interval = self
            .search
            .heartbeat_interval
            .unwrap_or(store::DEFAULT_HEARTBEAT_INTERVAL_S);
        let grace = self
            .search
            .grace_period
            .unwrap_or(store::DEFAULT_GRACE_PERIOD_S.max(2.0 * interval));
        for (key, v) in [("heartbeat_interval", interval), ("grace_period", grace)] {
            if !(v.is_finite() && v > 0.0 && v < 1e9) {
                return Err(Error::Config(format!(
                    "{}: search.{key} = {v}: must be a positive number of seconds",
                    self.origin
                )));
            }
        }
        if grace <= interval {
            return Err(Error::Config(format!(
                "{}: search.grace_period = {grace} must be longer than search.heartbeat_interval = {interval}",
                self.origin
            )));
        }
        Ok((
            Duration::from_secs_f64(interval),
            Duration::from_secs_f64(grace),
        ))
    }

    /// What identifies a study: resuming with anything else changed would mix two searches.
    /// The trial budget is left out, so a finished search can be extended with more trials.
    fn fingerprint(&self) -> Result<String> {
        // Where the study is stored and how often workers beat are not what is searched.
        let search = SearchSection {
            trials: 0,
            storage: None,
            study: None,
            heartbeat_interval: None,
            grace_period: None,
            ..self.search.clone()
        };
        let search = to_json(&search)?;
        Ok(format!("{}\n{search}", self.base.to_toml()?))
    }
}

/// A config value as a point of `dist`, when it is one.
fn value_in(dist: &super::Distribution, v: &toml::Value) -> Option<Value> {
    use super::Distribution as D;
    match dist {
        D::LogUniform { .. } | D::Uniform { .. } => v
            .as_float()
            .or_else(|| v.as_integer().map(|i| i as f64))
            .map(Value::Float),
        D::Int { .. } => v.as_integer().map(Value::Int),
        D::Choice(options) => options.iter().position(|o| o == v).map(Value::Choice),
    }
}

/// One row of the results: a trial and what it cost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrialRecord {
    /// The trial (number, values, state, objective, intermediate values).
    #[serde(flatten)]
    pub trial: Trial,
    /// Its run directory.
    pub run_dir: PathBuf,
    /// Wall time in seconds (when finished).
    pub seconds: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Attempts lost with their worker (killed, machine down) before this one; the trial was
    /// taken over and run again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_attempts: Vec<FailedAttempt>,
}

/// Options that are not part of the study's config.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Study directory (default `run.dir/run.name`).
    pub dir: Option<PathBuf>,
    /// Trials run at once.
    pub jobs: usize,
    /// Study store URL (overrides `search.storage`; `None`: the config's, else
    /// `STUDY/search.sqlite`).
    pub storage: Option<String>,
    /// Study name in a shared store (overrides `search.study`; default `run.name`).
    pub study: Option<String>,
}

/// A finished (or fully resumed) study.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResults {
    /// Objective metric name.
    pub objective: String,
    /// Its direction.
    pub direction: Direction,
    /// Parameter keys, in value order.
    pub params: Vec<String>,
    /// Every trial.
    pub trials: Vec<TrialRecord>,
    /// Number of the best completed trial.
    pub best_trial: Option<usize>,
    /// Share of objective variance each parameter explains alone (see `importance`).
    pub importance: Vec<(String, f64)>,
    /// Wall time of this invocation (seconds).
    pub wall_s: f64,
    /// Wall time of every invocation of this study together (seconds), from `search.sqlite`.
    #[serde(default)]
    pub total_wall_s: f64,
}

/// This process's view of the study: the store, the trials as last read, the sampler.
struct Study {
    store: Box<dyn StudyStore>,
    /// Every trial as last read from the store (this worker's own as last written).
    records: Vec<TrialRecord>,
    sampler: Box<dyn Sampler + Send>,
    /// A trial failed to start: stop proposing.
    stop: Option<String>,
}

impl Study {
    fn trials(&self) -> Vec<Trial> {
        self.records.iter().map(|r| r.trial.clone()).collect()
    }

    /// Write trial `number` as held in `records`, if `worker` still owns it; `false` (with a
    /// warning) when another worker has taken it over.
    fn save(&mut self, number: usize, worker: &str) -> Result<bool> {
        let Some(r) = self.records.iter().find(|r| r.trial.number == number) else {
            return Ok(false);
        };
        let owned = self.store.save(r, worker)?;
        if !owned {
            tracing::warn!(
                "trial {number}: another worker took it over (this one missed its heartbeats); \
                 this attempt is abandoned"
            );
        }
        Ok(owned)
    }

    /// Read every worker's trials again.
    fn refresh(&mut self) -> Result<()> {
        self.records = self.store.trials()?;
        Ok(())
    }
}

/// serde_json for the few shapes stored as JSON columns.
fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Config(e.to_string()))
}

fn lock(study: &Mutex<Study>) -> MutexGuard<'_, Study> {
    // A panic in one trial thread must not stop the others from recording results.
    study.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run (or resume, or join) the study of `cfg`.
pub fn search(
    cfg: &SearchConfig,
    options: &SearchOptions,
    device: &Device,
) -> Result<SearchResults> {
    let started = Instant::now();
    let run = StudyRun::open(cfg, options, device)?;
    let jobs = options.jobs.max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / jobs).max(1);
    tracing::info!(
        "search: {} trials, sampler {:?}, pruner {:?}, objective validation {} ({:?}), {jobs} at a time × {threads} threads, worker {}",
        cfg.search.trials,
        cfg.search.sampler,
        cfg.search.pruner,
        cfg.base.train.metric,
        run.direction,
        run.worker
    );
    run.run_workers(jobs, threads)?;
    run.finish(started)
}

/// A trial claimed by a worker: its number, its parameter values, and whether it is a trial
/// taken over (interrupted, or lost with its worker) and run again.
type Claimed = (usize, Vec<Value>, bool);

/// One invocation of [`search`]: what its trial workers share.
struct StudyRun<'a> {
    cfg: &'a SearchConfig,
    /// The study directory.
    dir: PathBuf,
    study: Arc<Mutex<Study>>,
    pruner: Arc<dyn Pruner + Send + Sync>,
    direction: Direction,
    /// Trial 0's values when `search.baseline` is set.
    baseline: Option<Vec<Value>>,
    device: &'a Device,
    /// This process's worker id (`host:pid`).
    worker: String,
    /// Interval between heartbeats of running trials.
    heartbeat: Duration,
    /// A running trial of another worker without a heartbeat for this long is taken over.
    grace: Duration,
}

impl<'a> StudyRun<'a> {
    /// Create the study directory and open (resume, or join) its study store.
    fn open(cfg: &'a SearchConfig, options: &SearchOptions, device: &'a Device) -> Result<Self> {
        let dir = options
            .dir
            .clone()
            .unwrap_or_else(|| cfg.base.run.dir.join(&cfg.base.run.name));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let storage = options.storage.as_deref().or(cfg.search.storage.as_deref());
        let name = options
            .study
            .clone()
            .or_else(|| cfg.search.study.clone())
            .unwrap_or_else(|| cfg.base.run.name.clone());
        let mut store = store::open(storage, &name, &dir, &cfg.fingerprint()?)?;
        let records = store.trials()?;
        if !records.is_empty() {
            tracing::info!(
                "joining the study in {}: {} trials recorded, {} running or interrupted",
                store.location(),
                records.len(),
                records
                    .iter()
                    .filter(|r| r.trial.state == TrialState::Running)
                    .count()
            );
        }
        let study = Arc::new(Mutex::new(Study {
            store,
            records,
            sampler: cfg.sampler(),
            stop: None,
        }));
        let pruner: Arc<dyn Pruner + Send + Sync> = Arc::from(cfg.pruner());
        let direction = cfg.direction();
        let baseline = if cfg.search.baseline {
            cfg.baseline_values()?
        } else {
            None
        };
        let (heartbeat, grace) = cfg.heartbeat()?;
        Ok(StudyRun {
            cfg,
            dir,
            study,
            pruner,
            direction,
            baseline,
            device,
            worker: store::worker_id(),
            heartbeat,
            grace,
        })
    }

    /// Run `jobs` workers (threads of `threads` cores each) until no trial is left, with a
    /// heartbeat thread for their running trials; the first worker error is returned once all
    /// have stopped.
    fn run_workers(&self, jobs: usize, threads: usize) -> Result<()> {
        let (stop_beating, beating) = mpsc::channel::<()>();
        let outcomes: Vec<Result<()>> = std::thread::scope(|scope| {
            scope.spawn(move || self.beat(&beating));
            let outcomes = if jobs == 1 {
                vec![self.worker(threads)]
            } else {
                let handles: Vec<_> = (0..jobs)
                    .map(|_| scope.spawn(move || self.worker(threads)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::Engine("a trial thread panicked".into()))
                        })
                    })
                    .collect()
            };
            drop(stop_beating);
            outcomes
        });
        for o in outcomes {
            o?;
        }
        Ok(())
    }

    /// Refresh this worker's running trials' heartbeat every interval until `stop` closes.
    fn beat(&self, stop: &mpsc::Receiver<()>) {
        while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(self.heartbeat) {
            if let Err(e) = lock(&self.study).store.heartbeat(&self.worker) {
                tracing::warn!("heartbeat not recorded: {e}");
            }
        }
    }

    /// One worker: claim trials and run them on its own thread pool until none is left.
    fn worker(&self, threads: usize) -> Result<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Engine(format!("thread pool: {e}")))?;
        while let Some((n, values, rerun)) = self.claim()? {
            self.run_trial(&pool, n, &values, rerun)?;
        }
        Ok(())
    }

    /// Claim a trial from the store (a lost worker's first, then a new proposal from every
    /// worker's history); while other workers still run trials, wait and ask again, since one
    /// of them may be lost. `None` when the study is stopped or done.
    fn claim(&self) -> Result<Option<Claimed>> {
        let poll = self
            .heartbeat
            .clamp(Duration::from_millis(100), Duration::from_secs(2));
        let mut waiting = false;
        loop {
            {
                let mut guard = lock(&self.study);
                if guard.stop.is_some() {
                    return Ok(None);
                }
                let req = ClaimRequest {
                    budget: self.cfg.search.trials,
                    worker: &self.worker,
                    grace: self.grace,
                    dir: &self.dir,
                };
                let (baseline, space, direction) =
                    (&self.baseline, &self.cfg.space, self.direction);
                let s = &mut *guard;
                let sampler = &mut s.sampler;
                let claim = s.store.claim(&req, &mut |history: &[Trial]| match (
                    baseline,
                    super::next_trial_number(history),
                ) {
                    (Some(b), 0) => b.clone(),
                    _ => sampler.sample(space, history, direction),
                })?;
                match claim {
                    Claim::Trial {
                        number,
                        values,
                        rerun,
                    } => {
                        s.refresh()?;
                        return Ok(Some((number, values, rerun)));
                    }
                    Claim::Done => return Ok(None),
                    Claim::Wait => {}
                }
            }
            if !waiting {
                tracing::info!("waiting for trials running on other workers");
                waiting = true;
            }
            std::thread::sleep(poll);
        }
    }

    /// Train trial `n` in its run directory (continuing from its checkpoint when it was
    /// interrupted) and record how it ended.
    fn run_trial(
        &self,
        pool: &rayon::ThreadPool,
        n: usize,
        values: &[Value],
        rerun: bool,
    ) -> Result<()> {
        let run_dir = self.dir.join(format!("trial-{n:03}"));
        let shown: Vec<String> = self
            .cfg
            .space
            .params
            .iter()
            .zip(values)
            .map(|(p, v)| format!("{}={}", p.key, v.display(&p.dist)))
            .collect();
        tracing::info!(
            "trial {n}{}: {}",
            if rerun { " (resumed)" } else { "" },
            shown.join(", ")
        );
        let config = match self.cfg.trial_config(values, &run_dir) {
            Ok(c) => c,
            Err(e) => {
                lock(&self.study).stop = Some(e.to_string());
                return Err(e);
            }
        };
        // An interrupted trial continues from its checkpoint when it has one.
        let resume = rerun && run_dir.join("checkpoints/latest.json").exists();
        if rerun && !resume {
            if run_dir.exists() {
                std::fs::remove_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
            }
            // Run again from the start: the lost attempt's reports go with it.
            let mut s = lock(&self.study);
            if let Some(r) = s.records.iter_mut().find(|r| r.trial.number == n) {
                r.trial.intermediate.clear();
            }
            s.save(n, &self.worker)?;
        }
        let options = TrainOptions {
            run_dir: Some(run_dir.clone()),
            resume,
            progress: false,
            on_eval: Some(self.pruning_hook(n)),
        };
        let t0 = Instant::now();
        let result = pool.install(|| train(&config, &options, self.device));
        let secs = t0.elapsed().as_secs_f64();
        self.record_outcome(n, rerun, secs, &config, result)
    }

    /// The hook training calls after each evaluation of trial `n`: record the intermediate
    /// value and ask the pruner whether to stop.
    fn pruning_hook(&self, n: usize) -> EvalHook {
        let hook_study = Arc::clone(&self.study);
        let hook_pruner = Arc::clone(&self.pruner);
        let direction = self.direction;
        let worker = self.worker.clone();
        EvalHook(Arc::new(move |evaluation, _step, value| {
            let mut s = lock(&hook_study);
            let Some(i) = s.records.iter().position(|r| r.trial.number == n) else {
                return false;
            };
            s.records[i]
                .trial
                .intermediate
                .retain(|&(e, _)| e != evaluation);
            s.records[i].trial.intermediate.push((evaluation, value));
            let trial = s.records[i].trial.clone();
            match s.save(n, &worker) {
                // Taken over by another worker: stop this attempt.
                Ok(false) => return true,
                Ok(true) => {}
                Err(e) => tracing::warn!("trial {n}: intermediate value not saved: {e}"),
            }
            // The pruner compares against every worker's reports.
            if let Err(e) = s.refresh() {
                tracing::warn!("trial {n}: other workers' trials not read: {e}");
            }
            let history = s.trials();
            hook_pruner.should_prune(&trial, &history, direction)
        }))
    }

    /// Record trial `n`'s end (complete, pruned or failed) and its time.
    fn record_outcome(
        &self,
        n: usize,
        rerun: bool,
        secs: f64,
        config: &RunConfig,
        result: Result<RunMetrics>,
    ) -> Result<()> {
        let mut s = lock(&self.study);
        let Some(i) = s.records.iter().position(|r| r.trial.number == n) else {
            return Ok(());
        };
        let rec = &mut s.records[i];
        // A resumed trial's time adds to what it ran before the interruption.
        let before = if rerun {
            rec.seconds.unwrap_or(0.0)
        } else {
            0.0
        };
        rec.seconds = Some(before + secs);
        match result {
            Ok(m) => {
                let y = m.validation_metric(&config.train.metric);
                rec.trial.objective = y;
                rec.trial.state = if y.is_some_and(f64::is_finite) {
                    TrialState::Complete
                } else {
                    rec.error = Some(format!(
                        "no validation {} (is there a validation split?)",
                        config.train.metric
                    ));
                    TrialState::Failed
                };
                tracing::info!(
                    "trial {n}: validation {} {} in {secs:.0} s",
                    config.train.metric,
                    y.map_or("—".into(), |v| format!("{v:.4}"))
                );
            }
            Err(Error::Pruned { evaluation, .. }) => {
                rec.trial.state = TrialState::Pruned;
                tracing::info!("trial {n}: pruned after evaluation {evaluation} ({secs:.0} s)");
            }
            Err(e) => {
                rec.trial.state = TrialState::Failed;
                rec.error = Some(e.to_string());
                tracing::warn!("trial {n} failed: {e}");
            }
        }
        if s.save(n, &self.worker)? && s.store.shares_runs() {
            // A shared store also gets the trial's experiment-index row; the index is a
            // record, never a reason to fail the search.
            let run_dir = self.dir.join(format!("trial-{n:03}"));
            let row = crate::index::RunIndex::open(&self.dir)
                .and_then(|index| index.get(&run_dir.display().to_string()));
            if let Err(e) = row.and_then(|row| s.store.record_run(&row)) {
                tracing::warn!("trial {n}: not recorded in the shared experiment index: {e}");
            }
        }
        Ok(())
    }

    /// Add this invocation's wall time to the study's, gather the results and write the
    /// outputs.
    fn finish(self, started: Instant) -> Result<SearchResults> {
        let mut s = lock(&self.study);
        // Wall time adds up over invocations (an interrupted and resumed search, an extension)
        // and over the workers of a shared study.
        let wall_s = started.elapsed().as_secs_f64();
        let before = s.store.add_wall_s(wall_s)?;
        s.refresh()?;
        let trials = s.trials();
        let best = best_trial(&trials, self.direction).map(|t| t.number);
        let results = SearchResults {
            objective: self.cfg.base.train.metric.clone(),
            direction: self.direction,
            params: self
                .cfg
                .space
                .params
                .iter()
                .map(|p| p.key.clone())
                .collect(),
            trials: s.records.clone(),
            best_trial: best,
            importance: importance(&self.cfg.space, &trials),
            wall_s,
            total_wall_s: before + wall_s,
        };
        drop(s);
        write_outputs(self.cfg, &self.dir, &results)?;
        Ok(results)
    }
}
/// `results.json`, `results.md` (the table), `best.toml` (the best trial's config, ready to
/// train) and `report.html` (objective per trial, learning curves, slices, importance).
fn write_outputs(cfg: &SearchConfig, dir: &Path, results: &SearchResults) -> Result<()> {
    let json = serde_json::to_string_pretty(results).map_err(|e| Error::Config(e.to_string()))?;
    write_atomic(&dir.join("results.json"), json.as_bytes())?;
    write_atomic(
        &dir.join("results.md"),
        results_table(cfg, results).as_bytes(),
    )?;
    if let Some(best) = results
        .best_trial
        .and_then(|n| results.trials.iter().find(|r| r.trial.number == n))
    {
        let name = format!("{}-best", cfg.base.run.name);
        let config = cfg.trial_config(&best.trial.values, &cfg.base.run.dir.join(name))?;
        let header = format!(
            "# Best trial ({}) of the search in {}: validation {} = {}.\n# Train it with: tunekit train best.toml\n",
            best.trial.number,
            dir.display(),
            results.objective,
            best.trial
                .objective
                .map_or("—".into(), |v| format!("{v:.4}"))
        );
        write_atomic(
            &dir.join("best.toml"),
            format!("{header}{}", config.to_toml()?).as_bytes(),
        )?;
    }
    crate::report::search::write(dir, cfg, results)?;
    Ok(())
}

/// The results as a Markdown table (trial, params, objective, status, time), plus importance.
pub fn results_table(cfg: &SearchConfig, results: &SearchResults) -> String {
    let mut out = String::new();
    out.push_str("| trial | ");
    for p in &cfg.space.params {
        out.push_str(&format!("{} | ", p.key));
    }
    out.push_str(&format!(
        "validation {} | evaluations | status | time (s) |\n|---|",
        results.objective
    ));
    for _ in &cfg.space.params {
        out.push_str("---|");
    }
    out.push_str("---|---|---|---|\n");
    for r in &results.trials {
        let best = if Some(r.trial.number) == results.best_trial {
            " **best**"
        } else {
            ""
        };
        let baseline = if r.trial.number == 0 && cfg.search.baseline {
            " (baseline)"
        } else {
            ""
        };
        out.push_str(&format!("| {}{baseline} | ", r.trial.number));
        for (p, v) in cfg.space.params.iter().zip(&r.trial.values) {
            out.push_str(&format!("{} | ", v.display(&p.dist)));
        }
        let objective = match (r.trial.objective, r.trial.last_report()) {
            (Some(v), _) => format!("{v:.4}"),
            (None, Some((_, v))) => format!("({v:.4} at stop)"),
            _ => "—".into(),
        };
        let state = match r.trial.state {
            TrialState::Complete => "complete",
            TrialState::Pruned => "pruned",
            TrialState::Failed => "failed",
            TrialState::Running => "running",
        };
        out.push_str(&format!(
            "{objective}{best} | {} | {state} | {} |\n",
            r.trial.intermediate.len(),
            r.seconds.map_or("—".into(), |s| format!("{s:.0}"))
        ));
    }
    let total: f64 = results.trials.iter().filter_map(|r| r.seconds).sum();
    out.push_str(&format!(
        "\nTrial time {total:.0} s in all; wall time {:.0} s over all invocations of the search ({:.0} s in the last).\n",
        results.total_wall_s, results.wall_s
    ));
    let lost: Vec<String> = results
        .trials
        .iter()
        .flat_map(|r| {
            r.failed_attempts
                .iter()
                .map(move |a| format!("- trial {}: {}; run again\n", r.trial.number, a.error))
        })
        .collect();
    if !lost.is_empty() {
        out.push_str("\nFailed attempts (taken over from lost workers):\n\n");
        out.push_str(&lost.concat());
    }
    if !results.importance.is_empty() {
        out.push_str(
            "\nImportance (share of objective variance explained by each parameter alone):\n\n",
        );
        for (k, v) in &results.importance {
            out.push_str(&format!("- {k}: {v:.3}\n"));
        }
    }
    out
}
