//! Hyperparameter search: the pure algorithms, with no training, files or database in them.
//!
//! - [`space`]: what is searched — parameters parsed from `loguniform(1e-5, 1e-3)`-style text,
//!   sampled [`Value`]s, config overrides, grids;
//! - samplers ([`Sampler`]): [`RandomSampler`], [`GridSampler`], [`TpeSampler`] (in [`tpe`]);
//! - [`pruner`]: stopping unpromising trials early from their intermediate scores;
//! - [`importance`]: which parameters mattered.
//!
//! Everything here is a function of its inputs: a sampler derives its random numbers for trial
//! `n` from `(seed, n)` and reads the past only from the `history` it is given, and pruners
//! re-derive their state from the trials' reports. So the caller can keep the whole search
//! state in its database (one row per [`Trial`]), and a search resumed after a crash proposes
//! exactly what the uninterrupted search would have.

pub mod importance;
pub mod pruner;
pub mod space;
pub mod store;
pub mod study;
pub mod tpe;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

pub use importance::importance;
pub use pruner::{MedianPruner, NoPruner, Pruner, SuccessiveHalvingPruner};
pub use space::{Distribution, Param, SearchSpace, Value};
pub use tpe::{TpeOptions, TpeSampler};

/// Where a trial is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    /// Proposed and (maybe) training; ignored by TPE (the grid sampler does not propose its
    /// point again).
    Running,
    /// Finished with an objective value.
    Complete,
    /// Stopped early by a pruner; its intermediate values still inform TPE.
    Pruned,
    /// Crashed or produced no usable objective; ignored by TPE (the grid sampler does not
    /// retry its point).
    Failed,
}

/// Whether larger or smaller objective values are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Larger is better (accuracy, F1).
    Maximize,
    /// Smaller is better (loss).
    Minimize,
}

impl Direction {
    /// Whether `a` is strictly better than `b`. NaN is never better.
    pub fn is_better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Maximize => a > b,
            Direction::Minimize => a < b,
        }
    }
}

/// One trial of a search, as the caller stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// 0-based trial number, in the order trials were proposed.
    pub number: usize,
    /// One value per parameter of the [`SearchSpace`], in its order.
    pub values: Vec<Value>,
    /// Where the trial is.
    pub state: TrialState,
    /// The final objective, for completed trials.
    pub objective: Option<f64>,
    /// `(step, value)` reports so far (step = epoch or evaluation step), in report order.
    pub intermediate: Vec<(usize, f64)>,
}

impl Trial {
    /// The objective when this trial completed with a finite one. Complete trials without one
    /// (NaN, missing) are treated as failed everywhere, as Optuna refuses to complete them.
    pub fn complete_objective(&self) -> Option<f64> {
        match (self.state, self.objective) {
            (TrialState::Complete, Some(y)) if y.is_finite() => Some(y),
            _ => None,
        }
    }

    /// The last reported `(step, value)`: the one at the largest step (Optuna's `last_step`).
    pub fn last_report(&self) -> Option<(usize, f64)> {
        // `max_by_key` keeps the last of equal steps, i.e. the latest report at that step.
        self.intermediate
            .iter()
            .copied()
            .max_by_key(|&(step, _)| step)
    }

    /// The value reported at exactly `step` (the latest one if reported twice).
    pub fn value_at(&self, step: usize) -> Option<f64> {
        self.intermediate
            .iter()
            .rev()
            .find(|&&(s, _)| s == step)
            .map(|&(_, v)| v)
    }
}

/// The best completed trial, if any (the earliest among equals).
pub fn best_trial(history: &[Trial], direction: Direction) -> Option<&Trial> {
    let mut best: Option<(&Trial, f64)> = None;
    for t in history {
        if let Some(y) = t.complete_objective()
            && best.is_none_or(|(_, b)| direction.is_better(y, b))
        {
            best = Some((t, y));
        }
    }
    best.map(|(t, _)| t)
}

/// Proposes the parameter values of the next trial.
pub trait Sampler {
    /// The values for the next trial, one per parameter of `space`. `history` holds every
    /// earlier trial of the search, whatever its state; the trial being proposed is numbered
    /// [`next_trial_number`]`(history)`, and that number (with the sampler's seed) fixes the
    /// random numbers used, so the same history always yields the same proposal.
    fn sample(
        &mut self,
        space: &SearchSpace,
        history: &[Trial],
        direction: Direction,
    ) -> Vec<Value>;
}

/// The number of the trial after `history`: one past the largest number in it (0 when empty).
/// Taken from the numbers rather than the length so that a caller that leaves some trials out
/// (failed ones, say) still gets distinct random streams.
pub fn next_trial_number(history: &[Trial]) -> usize {
    history.iter().map(|t| t.number + 1).max().unwrap_or(0)
}

/// The random stream for trial `trial` of a search seeded with `seed`. Seeding ChaCha with both
/// numbers as its key gives independent streams without keeping any generator state between
/// trials, which is what makes resumed searches reproduce their proposals.
pub(crate) fn trial_rng(seed: u64, trial: usize) -> StdRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(trial as u64).to_le_bytes());
    key[16..32].copy_from_slice(b"tunekit.search.1");
    StdRng::from_seed(key)
}

/// Uniform sampling on each parameter's prior (log-uniform for log scales), as Optuna's
/// `RandomSampler`. The baseline every other sampler must beat, and TPE's start-up sampler.
#[derive(Debug, Clone)]
pub struct RandomSampler {
    seed: u64,
}

impl RandomSampler {
    /// A random sampler; same seed and history, same proposals.
    pub fn new(seed: u64) -> Self {
        RandomSampler { seed }
    }
}

impl Sampler for RandomSampler {
    fn sample(&mut self, space: &SearchSpace, history: &[Trial], _: Direction) -> Vec<Value> {
        let mut rng = trial_rng(self.seed, next_trial_number(history));
        space.sample_uniform(&mut rng)
    }
}

/// Walks the grid of [`SearchSpace::grid`] in order, proposing the first point that no trial in
/// `history` has (in any state — a failed point is not retried, as in Optuna), so a resumed grid
/// search carries on where it stopped.
///
/// Once every point has been tried it falls back to random sampling (seeded like
/// [`RandomSampler`]) rather than repeating points, so a trial budget larger than the grid still
/// buys new information; the caller can stop at [`GridSampler::len`] trials to avoid that.
#[derive(Debug, Clone)]
pub struct GridSampler {
    points_per_continuous: usize,
    seed: u64,
}

impl GridSampler {
    /// A grid with `points_per_continuous` points on each float parameter (and on integer
    /// parameters with more values than that); `seed` drives the fallback once it is exhausted.
    pub fn new(points_per_continuous: usize, seed: u64) -> Self {
        GridSampler {
            points_per_continuous,
            seed,
        }
    }

    /// The number of grid points for `space`.
    pub fn len(&self, space: &SearchSpace) -> usize {
        space::grid_len(&space.grid_axes(self.points_per_continuous))
    }

    /// Whether the grid for `space` is empty (never, for a valid space).
    pub fn is_empty(&self, space: &SearchSpace) -> bool {
        self.len(space) == 0
    }
}

impl Sampler for GridSampler {
    fn sample(&mut self, space: &SearchSpace, history: &[Trial], _: Direction) -> Vec<Value> {
        let axes = space.grid_axes(self.points_per_continuous);
        // Points are built one at a time so that a huge grid is never materialised.
        for index in 0..space::grid_len(&axes) {
            let point = space::grid_point(&axes, index);
            let done = history.iter().any(|t| {
                t.values.len() == point.len()
                    && t.values
                        .iter()
                        .zip(&point)
                        .all(|(a, b)| space::same_value(a, b))
            });
            if !done {
                return point;
            }
        }
        let mut rng = trial_rng(self.seed, next_trial_number(history));
        space.sample_uniform(&mut rng)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A finished trial, for hand-made histories.
    pub(crate) fn done(number: usize, values: Vec<Value>, objective: f64) -> Trial {
        Trial {
            number,
            values,
            state: TrialState::Complete,
            objective: Some(objective),
            intermediate: Vec::new(),
        }
    }

    fn space2() -> SearchSpace {
        SearchSpace::from_texts([
            ("lr", "loguniform(1e-5, 1e-3)"),
            ("sched", r#"choice(["linear", "cosine"])"#),
        ])
        .unwrap()
    }

    #[test]
    fn grid_sampler_walks_in_order_and_resume_skips_done_points() {
        let space = space2();
        let mut grid = GridSampler::new(3, 0);
        assert_eq!(grid.len(&space), 6);
        let all = space.grid(3);
        let mut history = Vec::new();
        for (i, want) in all.iter().enumerate() {
            let got = grid.sample(&space, &history, Direction::Maximize);
            assert_eq!(&got, want, "point {i}");
            history.push(done(i, got, 0.0));
        }
        // Resume: points 0, 2 and 3 done (3 failed, still not retried), through a JSON round
        // trip as from the database; the next proposals are 1, then 4.
        let stored: Vec<Trial> = [0, 2, 3]
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                let mut t = done(n, all[i].clone(), 0.5);
                if i == 3 {
                    t.state = TrialState::Failed;
                }
                serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap()
            })
            .collect();
        let mut fresh = GridSampler::new(3, 0);
        let next = fresh.sample(&space, &stored, Direction::Maximize);
        assert_eq!(next, all[1]);
        let mut stored = stored;
        stored.push(done(3, next, 0.1));
        assert_eq!(fresh.sample(&space, &stored, Direction::Maximize), all[4]);
        // Exhausted: a random point, still inside the space, and reproducible.
        let a = grid.sample(&space, &history, Direction::Maximize);
        let b = GridSampler::new(3, 0).sample(&space, &history, Direction::Maximize);
        assert!(space.contains(&a));
        assert_eq!(a, b);
    }

    #[test]
    fn random_sampler_is_deterministic_per_trial_number() {
        let space = space2();
        let history: Vec<Trial> = (0..3)
            .map(|n| done(n, vec![Value::Float(1e-4), Value::Choice(0)], 0.0))
            .collect();
        let a = RandomSampler::new(5).sample(&space, &history, Direction::Minimize);
        let b = RandomSampler::new(5).sample(&space, &history, Direction::Minimize);
        let c = RandomSampler::new(6).sample(&space, &history, Direction::Minimize);
        let d = RandomSampler::new(5).sample(&space, &history[..2], Direction::Minimize);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(next_trial_number(&history), 3);
        assert_eq!(next_trial_number(&[]), 0);
    }

    #[test]
    fn trials_serialize_for_the_database() {
        let mut t = done(4, vec![Value::Float(2e-5), Value::Choice(1)], 0.91);
        t.state = TrialState::Pruned;
        t.intermediate = vec![(1, 0.8), (2, 0.85)];
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""state":"pruned""#), "{json}");
        assert!(
            json.contains(r#""intermediate":[[1,0.8],[2,0.85]]"#),
            "{json}"
        );
        let back: Trial = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert_eq!(
            serde_json::to_string(&Direction::Maximize).unwrap(),
            r#""maximize""#
        );
        assert_eq!(
            serde_json::from_str::<TrialState>(r#""running""#).unwrap(),
            TrialState::Running
        );
    }

    #[test]
    fn best_trial_is_direction_aware_and_skips_unfinished() {
        let v = || vec![Value::Float(1e-4), Value::Choice(0)];
        let mut history = vec![done(0, v(), 0.5), done(1, v(), 0.9), done(2, v(), 0.1)];
        history.push(Trial {
            state: TrialState::Pruned,
            ..done(3, v(), 5.0)
        });
        history.push(done(4, v(), f64::NAN));
        assert_eq!(best_trial(&history, Direction::Maximize).unwrap().number, 1);
        assert_eq!(best_trial(&history, Direction::Minimize).unwrap().number, 2);
        assert!(best_trial(&history[3..], Direction::Minimize).is_none());
        let t = Trial {
            intermediate: vec![(1, 0.1), (3, 0.3), (2, 0.2), (3, 0.35)],
            ..done(0, v(), 0.0)
        };
        assert_eq!(t.last_report(), Some((3, 0.35)));
        assert_eq!(t.value_at(2), Some(0.2));
        assert_eq!(t.value_at(3), Some(0.35));
    }
}
