//! Pruners: decide from a running trial's intermediate scores whether to stop it early, so the
//! search budget goes to promising configurations.
//!
//! Both follow Optuna's semantics, but hold no state of their own: Optuna's successive halving
//! records each trial's rung values in the storage as it goes, whereas here they are re-derived
//! from every trial's `(step, value)` reports, so the caller needs to persist nothing beyond the
//! trials themselves and a resumed search prunes exactly as before.

use super::{Direction, Trial, TrialState};

/// Decides whether a running trial should stop.
pub trait Pruner {
    /// Whether to stop `trial` now, given its reports so far (`trial.intermediate`; the newest is
    /// the one at the largest step) and the other trials of the search (`history`; an entry
    /// with the same number as `trial` is ignored, so the caller may pass its whole table).
    /// Call it after every report.
    fn should_prune(&self, trial: &Trial, history: &[Trial], direction: Direction) -> bool;
}

/// Never prunes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoPruner;

impl Pruner for NoPruner {
    fn should_prune(&self, _: &Trial, _: &[Trial], _: Direction) -> bool {
        false
    }
}

/// Optuna's `MedianPruner` (a `PercentilePruner` at 50, `n_min_trials = 1`): at a checked step
/// `s`, prune when the trial's *best* intermediate value so far is worse than the median of the
/// values that *completed* trials reported at exactly step `s`.
///
/// Best-so-far (not the value at `s`) and completed-only (not pruned) are Optuna's choices: a
/// trial that was once good is not killed by one noisy evaluation, and the median is taken over
/// trials known to be worth finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MedianPruner {
    /// No pruning until this many trials have completed.
    pub n_startup_trials: usize,
    /// No pruning at steps below this (the earliest prune is at `step == n_warmup_steps`).
    pub n_warmup_steps: usize,
    /// Check only every this many steps after the warm-up (0 is taken as 1).
    pub interval_steps: usize,
}

impl Default for MedianPruner {
    /// Optuna's defaults: 5 start-up trials, no warm-up, check every step.
    fn default() -> Self {
        MedianPruner {
            n_startup_trials: 5,
            n_warmup_steps: 0,
            interval_steps: 1,
        }
    }
}

impl Pruner for MedianPruner {
    fn should_prune(&self, trial: &Trial, history: &[Trial], direction: Direction) -> bool {
        let completed: Vec<&Trial> = history
            .iter()
            .filter(|t| t.number != trial.number && t.complete_objective().is_some())
            .collect();
        if completed.is_empty() || completed.len() < self.n_startup_trials {
            return false;
        }
        let Some((step, _)) = trial.last_report() else {
            return false;
        };
        if step < self.n_warmup_steps {
            return false;
        }
        // Optuna's `_is_first_in_interval_step`: check only on the first report at or after
        // each pruning step, so sparse reports still get checked.
        let interval = self.interval_steps.max(1);
        let nearest_lower =
            (step - self.n_warmup_steps) / interval * interval + self.n_warmup_steps;
        let second_last = trial
            .intermediate
            .iter()
            .map(|&(s, _)| s)
            .filter(|&s| s != step)
            .max();
        if second_last.is_some_and(|s| s >= nearest_lower) {
            return false;
        }
        let finite = trial
            .intermediate
            .iter()
            .map(|&(_, v)| v)
            .filter(|v| !v.is_nan());
        let best = match direction {
            Direction::Maximize => {
                finite.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v))))
            }
            Direction::Minimize => {
                finite.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.min(v))))
            }
        };
        // Only NaN reported: the trial is broken (Optuna prunes it).
        let Some(best) = best else {
            return true;
        };
        let mut at_step: Vec<f64> = completed
            .iter()
            .filter_map(|t| t.value_at(step))
            .filter(|v| !v.is_nan())
            .collect();
        let Some(median) = percentile(&mut at_step, 50.0) else {
            return false;
        };
        direction.is_better(median, best)
    }
}

/// numpy's default (linear interpolation) percentile; `None` for no values.
fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = q / 100.0 * (values.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(values.len() - 1);
    let frac = rank - lo as f64;
    Some(values[lo] + frac * (values[hi] - values[lo]))
}

/// Optuna's `SuccessiveHalvingPruner` (asynchronous successive halving, Li et al. 2020).
///
/// Rung `r` sits at step `min_resource · η^(min_early_stopping_rate + r)`. When a trial's
/// newest report reaches a rung, that value is recorded for the rung and the trial goes on
/// only if it is in the top `1/η` of all values recorded at that rung so far (for the first
/// `η − 1` trials at a rung, only if it is the best — Optuna cannot pause and resume trials,
/// so it cannot wait for a full rung). One report can pass several rungs at once.
///
/// The default `η` is 3, not Optuna's 4: fine-tuning runs here are a few epochs long (3 by
/// default) and report once per epoch, so with `η = 4` the rungs are at epochs 1 and 4 and a
/// 3-epoch trial meets only one; with `η = 3` they are at epochs 1 and 3, two chances to cut.
/// `min_resource = 1` is what Optuna's `"auto"` gives for runs under 200 steps. Report epochs
/// as steps; with optimiser steps as steps, raise `min_resource` to about one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuccessiveHalvingPruner {
    /// Step of the first rung (0 is taken as 1).
    pub min_resource: usize,
    /// η: the fraction `1/η` of trials promoted at each rung (below 2 is taken as 2).
    pub reduction_factor: usize,
    /// `s`: skips the first `s` rungs' positions, making the first rung `min_resource · η^s`.
    pub min_early_stopping_rate: usize,
}

impl Default for SuccessiveHalvingPruner {
    fn default() -> Self {
        SuccessiveHalvingPruner {
            min_resource: 1,
            reduction_factor: 3,
            min_early_stopping_rate: 0,
        }
    }
}

impl SuccessiveHalvingPruner {
    fn eta(&self) -> usize {
        self.reduction_factor.max(2)
    }

    /// The step at which rung `rung` is reached (saturating: an unreachable rung).
    pub fn rung_step(&self, rung: usize) -> usize {
        let exponent = self.min_early_stopping_rate.saturating_add(rung);
        u32::try_from(exponent)
            .ok()
            .and_then(|e| self.eta().checked_pow(e))
            .and_then(|p| p.checked_mul(self.min_resource.max(1)))
            .unwrap_or(usize::MAX)
    }

    /// The values `reports` recorded at rungs 0, 1, …, replaying what Optuna's pruner stores
    /// after each report: the value of the first report at or past each rung's step. When
    /// `stopped_at_last` (a pruned trial), its final report is taken to have been stopped at
    /// the first rung it reached, so later rungs passed by that same report are not credited.
    fn replay(&self, reports: &[(usize, f64)], stopped_at_last: bool) -> Vec<f64> {
        let mut recorded = Vec::new();
        for (k, &(step, value)) in reports.iter().enumerate() {
            let last = k + 1 == reports.len();
            while step >= self.rung_step(recorded.len()) {
                if value.is_nan() {
                    // Optuna prunes on NaN before recording anything.
                    return recorded;
                }
                recorded.push(value);
                if last && stopped_at_last {
                    return recorded;
                }
            }
        }
        recorded
    }
}

/// Reports sorted by step, one per step (the latest report at a step wins).
fn by_step(trial: &Trial) -> Vec<(usize, f64)> {
    let mut reports = trial.intermediate.clone();
    reports.sort_by_key(|&(step, _)| step); // stable: equal steps keep report order
    let mut out: Vec<(usize, f64)> = Vec::with_capacity(reports.len());
    for r in reports {
        match out.last_mut() {
            Some(last) if last.0 == r.0 => *last = r,
            _ => out.push(r),
        }
    }
    out
}

impl Pruner for SuccessiveHalvingPruner {
    fn should_prune(&self, trial: &Trial, history: &[Trial], direction: Direction) -> bool {
        let Some((step, value)) = trial.last_report() else {
            return false;
        };
        // Rungs this trial already passed on its earlier reports.
        let earlier: Vec<(usize, f64)> = by_step(trial)
            .into_iter()
            .filter(|&(s, _)| s < step)
            .collect();
        let mut rung = self.replay(&earlier, false).len();
        let others: Vec<Vec<f64>> = history
            .iter()
            .filter(|t| t.number != trial.number)
            .map(|t| self.replay(&by_step(t), t.state == TrialState::Pruned))
            .collect();
        loop {
            if step < self.rung_step(rung) {
                return false;
            }
            if value.is_nan() {
                return true;
            }
            let mut competing: Vec<f64> =
                others.iter().filter_map(|r| r.get(rung).copied()).collect();
            competing.push(value);
            if !promotable(value, &mut competing, self.eta(), direction) {
                return true;
            }
            rung += 1;
        }
    }
}

/// Optuna's `_is_trial_promotable_to_next_rung`: `value` must reach the `⌊n/η⌋`-th best of the
/// `n` competing values (the best itself while `n < η`).
fn promotable(value: f64, competing: &mut [f64], eta: usize, direction: Direction) -> bool {
    let idx = (competing.len() / eta).saturating_sub(1);
    competing.sort_by(f64::total_cmp);
    match direction {
        Direction::Maximize => value >= competing[competing.len() - 1 - idx],
        Direction::Minimize => value <= competing[idx],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::Value;

    fn trial(number: usize, state: TrialState, reports: &[(usize, f64)]) -> Trial {
        Trial {
            number,
            values: vec![Value::Float(0.1)],
            state,
            objective: (state == TrialState::Complete).then(|| reports.last().map_or(0.0, |r| r.1)),
            intermediate: reports.to_vec(),
        }
    }

    /// Five completed trials whose step-1 accuracies are .5 .6 .7 .8 .9 (median .7) and whose
    /// step-2 accuracies are .1 higher (median .8).
    fn five_completed() -> Vec<Trial> {
        (0..5)
            .map(|i| {
                let v = 0.5 + 0.1 * i as f64;
                trial(i, TrialState::Complete, &[(1, v), (2, v + 0.1)])
            })
            .collect()
    }

    #[test]
    fn median_pruner_prunes_the_worse_and_keeps_the_better() {
        let p = MedianPruner::default();
        let history = five_completed();
        let max = Direction::Maximize;
        assert!(p.should_prune(&trial(9, TrialState::Running, &[(1, 0.55)]), &history, max));
        assert!(!p.should_prune(&trial(9, TrialState::Running, &[(1, 0.75)]), &history, max));
        // Exactly the median is kept (strictly worse prunes).
        assert!(!p.should_prune(&trial(9, TrialState::Running, &[(1, 0.7)]), &history, max));
        // Best-so-far counts: .85 at step 1 beats step 2's median .8 even after a dip to .3.
        assert!(!p.should_prune(
            &trial(9, TrialState::Running, &[(1, 0.85), (2, 0.3)]),
            &history,
            max
        ));
        assert!(p.should_prune(
            &trial(9, TrialState::Running, &[(1, 0.65), (2, 0.75)]),
            &history,
            max
        ));
        // No completed trial reported at step 3: nothing to compare with.
        assert!(!p.should_prune(&trial(9, TrialState::Running, &[(3, 0.0)]), &history, max));
        // Only NaN reported: pruned.
        assert!(p.should_prune(
            &trial(9, TrialState::Running, &[(1, f64::NAN)]),
            &history,
            max
        ));
        // No reports yet: never.
        assert!(!p.should_prune(&trial(9, TrialState::Running, &[]), &history, max));
    }

    #[test]
    fn median_pruner_uses_only_completed_trials_and_the_median_interpolates() {
        let p = MedianPruner {
            n_startup_trials: 1,
            ..MedianPruner::default()
        };
        let mut history = five_completed();
        // Pruned and running trials with terrible values do not lower the median.
        history.push(trial(5, TrialState::Pruned, &[(1, 0.0)]));
        history.push(trial(6, TrialState::Running, &[(1, 0.0)]));
        history.push(trial(7, TrialState::Failed, &[(1, 0.0)]));
        assert!(p.should_prune(
            &trial(9, TrialState::Running, &[(1, 0.65)]),
            &history,
            Direction::Maximize
        ));
        // Four values .5 .6 .7 .8: median .65.
        history.remove(4);
        assert!(!p.should_prune(
            &trial(9, TrialState::Running, &[(1, 0.66)]),
            &history,
            Direction::Maximize
        ));
        assert!(p.should_prune(
            &trial(9, TrialState::Running, &[(1, 0.64)]),
            &history,
            Direction::Maximize
        ));
    }

    #[test]
    fn median_pruner_respects_startup_warmup_and_interval() {
        let history = five_completed();
        let bad = trial(9, TrialState::Running, &[(1, 0.1)]);
        let max = Direction::Maximize;
        let six = MedianPruner {
            n_startup_trials: 6,
            ..MedianPruner::default()
        };
        assert!(!six.should_prune(&bad, &history, max));
        assert!(!MedianPruner::default().should_prune(&bad, &history[..4], max));
        assert!(MedianPruner::default().should_prune(&bad, &history, max));
        // The trial's own row in the history does not count as a completed trial.
        let mut with_self = history[..4].to_vec();
        with_self.push(trial(9, TrialState::Complete, &[(1, 0.1)]));
        assert!(!MedianPruner::default().should_prune(&bad, &with_self, max));
        let warm = MedianPruner {
            n_warmup_steps: 2,
            ..MedianPruner::default()
        };
        assert!(!warm.should_prune(&bad, &history, max));
        let bad2 = trial(9, TrialState::Running, &[(1, 0.1), (2, 0.1)]);
        assert!(warm.should_prune(&bad2, &history, max));
        // Interval 2 from warm-up 0: pruning steps 0, 2, 4…, each checked at the first report
        // at or past it. Completed trials here report at steps 1–4.
        let every2 = MedianPruner {
            interval_steps: 2,
            ..MedianPruner::default()
        };
        let history: Vec<Trial> = (0..5)
            .map(|i| {
                let reports: Vec<(usize, f64)> =
                    (1..=4).map(|s| (s, 0.5 + 0.1 * i as f64)).collect();
                trial(i, TrialState::Complete, &reports)
            })
            .collect();
        let bad_until = |last: usize| {
            let reports: Vec<(usize, f64)> = (1..=last).map(|s| (s, 0.1)).collect();
            trial(9, TrialState::Running, &reports)
        };
        // Step 1 is the first report past pruning step 0 (the check was postponed to it).
        assert!(every2.should_prune(&bad_until(1), &history, max));
        assert!(every2.should_prune(&bad_until(2), &history, max));
        // Step 3: pruning step 2 was already checked at step 2.
        assert!(!every2.should_prune(&bad_until(3), &history, max));
        assert!(every2.should_prune(&bad_until(4), &history, max));
        // The same check without the interval prunes at step 3.
        assert!(MedianPruner::default().should_prune(&bad_until(3), &history, max));
    }

    #[test]
    fn median_pruner_minimize_flips_the_comparison() {
        let p = MedianPruner::default();
        let history = five_completed(); // read as losses now: median .7 at step 1
        let min = Direction::Minimize;
        assert!(!p.should_prune(&trial(9, TrialState::Running, &[(1, 0.55)]), &history, min));
        assert!(p.should_prune(&trial(9, TrialState::Running, &[(1, 0.75)]), &history, min));
    }

    #[test]
    fn sha_rungs_are_at_min_resource_times_eta_powers() {
        let sha = SuccessiveHalvingPruner::default();
        assert_eq!(
            (sha.rung_step(0), sha.rung_step(1), sha.rung_step(2)),
            (1, 3, 9)
        );
        let s1 = SuccessiveHalvingPruner {
            min_resource: 2,
            reduction_factor: 4,
            min_early_stopping_rate: 1,
        };
        assert_eq!((s1.rung_step(0), s1.rung_step(1)), (8, 32));
        assert_eq!(sha.rung_step(200), usize::MAX);
    }

    #[test]
    fn sha_keeps_only_the_top_third_at_a_rung() {
        let sha = SuccessiveHalvingPruner::default();
        let max = Direction::Maximize;
        // Rung 0 (step 1) so far: .5 .6 .7 .8 .9 from five other trials.
        let history: Vec<Trial> = (0..5)
            .map(|i| trial(i, TrialState::Complete, &[(1, 0.5 + 0.1 * i as f64)]))
            .collect();
        // With the newcomer there are 6 values: the top 6/3 = 2 go on, i.e. ≥ 2nd best.
        assert!(!sha.should_prune(&trial(9, TrialState::Running, &[(1, 0.85)]), &history, max));
        assert!(sha.should_prune(&trial(9, TrialState::Running, &[(1, 0.75)]), &history, max));
        // Minimize: ≤ 2nd smallest.
        let min = Direction::Minimize;
        assert!(!sha.should_prune(&trial(9, TrialState::Running, &[(1, 0.55)]), &history, min));
        assert!(sha.should_prune(&trial(9, TrialState::Running, &[(1, 0.65)]), &history, min));
        // Step 2 is between rungs: no decision, however bad the value.
        assert!(!sha.should_prune(
            &trial(9, TrialState::Running, &[(1, 0.95), (2, 0.0)]),
            &history,
            max
        ));
        // The very first trial at a rung is always promoted.
        assert!(!sha.should_prune(&trial(9, TrialState::Running, &[(1, 0.0)]), &[], max));
        // While fewer than η values are at a rung, only the best goes on.
        assert!(sha.should_prune(
            &trial(9, TrialState::Running, &[(1, 0.8)]),
            &history[4..],
            max
        ));
        assert!(!sha.should_prune(
            &trial(9, TrialState::Running, &[(1, 0.95)]),
            &history[4..],
            max
        ));
    }

    #[test]
    fn sha_rung_values_come_from_the_first_report_past_each_rung() {
        let sha = SuccessiveHalvingPruner::default();
        let max = Direction::Maximize;
        // Rung 1 (step 3): the others recorded .4, .5, .6 — step 3 values, not step 1 or 2 ones.
        // A pruned trial stopped at rung 0 has no rung-1 value; a trial that reported step 4
        // first recorded its step-4 value at rung 1.
        let history = vec![
            trial(0, TrialState::Complete, &[(1, 0.9), (2, 0.9), (3, 0.4)]),
            trial(1, TrialState::Complete, &[(1, 0.9), (3, 0.5), (4, 0.99)]),
            trial(2, TrialState::Running, &[(2, 0.9), (4, 0.6)]),
            trial(3, TrialState::Pruned, &[(1, 0.95)]),
        ];
        // 4 competing values at rung 1 → top 4/3 = 1, i.e. must beat .6.
        let at3 = |v: f64| trial(9, TrialState::Running, &[(1, 1.0), (2, 1.0), (3, v)]);
        assert!(!sha.should_prune(&at3(0.61), &history, max));
        assert!(sha.should_prune(&at3(0.59), &history, max));
        // One report jumping to step 9 is judged at rungs 0, 1 and 2 in turn. At rung 0 the
        // values are .9 .9 .9 .95 and the newcomer: 5 values, top 5/3 = 1, so .92 is pruned
        // there, while .96 passes rung 0, then rung 1 (.4 .5 .6) and rung 2 (alone).
        assert!(sha.should_prune(&trial(9, TrialState::Running, &[(9, 0.92)]), &history, max));
        assert!(!sha.should_prune(&trial(9, TrialState::Running, &[(9, 0.96)]), &history, max));
        // NaN at a rung prunes.
        assert!(sha.should_prune(
            &trial(9, TrialState::Running, &[(1, f64::NAN)]),
            &history,
            max
        ));
        // Replay: a pruned trial whose last report crossed rungs 0–2 is credited with rung 0 only.
        assert_eq!(sha.replay(&[(9, 0.5)], true), vec![0.5]);
        assert_eq!(sha.replay(&[(9, 0.5)], false), vec![0.5, 0.5, 0.5]);
        assert_eq!(
            sha.replay(&[(1, 0.1), (2, 0.2), (5, 0.3)], false),
            vec![0.1, 0.3]
        );
    }

    #[test]
    fn no_pruner_never_prunes() {
        let history = five_completed();
        assert!(!NoPruner.should_prune(
            &trial(9, TrialState::Running, &[(1, f64::NAN)]),
            &history,
            Direction::Maximize
        ));
    }
}
