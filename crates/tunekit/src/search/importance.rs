//! Parameter importance: which parameters the objective actually depended on.
//!
//! The method, stated plainly: for each parameter alone, the share of the objective's variance
//! that its value explains — the correlation ratio
//! `η² = Σ_groups n_g (ȳ_g − ȳ)² / Σ_trials (y − ȳ)²` — with trials grouped by option for
//! choices and into `min(4, ⌊n/3⌋)` equal-count quantile bins of the internal coordinate (log
//! scale for log parameters) for numbers. The η² are then normalised to sum to 1.
//!
//! This is a marginal (main-effect) estimate, like the first-order terms of fANOVA (Optuna's
//! default importance evaluator) but read straight off the trials instead of off a random
//! forest fitted to them. Cheap and dependency-free, at a price: interactions are not
//! attributed, and with few trials every parameter picks up some chance η² (about
//! `(groups − 1)/(n − 1)` on average), so small shares mean "no evidence", not "no effect".

use super::Trial;
use super::space::{Distribution, SearchSpace};

/// The importance of each parameter of `space`, from the completed trials in `trials`
/// (finite objective, values fitting the space): `(key, share)` summing to 1, largest first
/// (ties in key order). All shares are 0 when nothing can be said: fewer than two such trials,
/// or a constant objective.
pub fn importance(space: &SearchSpace, trials: &[Trial]) -> Vec<(String, f64)> {
    let data: Vec<(&Trial, f64)> = trials
        .iter()
        .filter(|t| space.contains(&t.values))
        .filter_map(|t| t.complete_objective().map(|y| (t, y)))
        .collect();
    let n = data.len();
    let mean = data.iter().map(|(_, y)| y).sum::<f64>() / n.max(1) as f64;
    let total_ss: f64 = data.iter().map(|(_, y)| (y - mean).powi(2)).sum();

    let mut eta2: Vec<f64> = space
        .params
        .iter()
        .enumerate()
        .map(|(i, param)| {
            if n < 2 || total_ss <= 0.0 || !total_ss.is_finite() {
                return 0.0;
            }
            let groups = group_ids(&param.dist, data.iter().map(|(t, _)| &t.values[i]));
            let n_groups = groups.iter().copied().max().map_or(0, |m| m + 1);
            let mut sums = vec![0.0; n_groups];
            let mut counts = vec![0usize; n_groups];
            for (&g, (_, y)) in groups.iter().zip(&data) {
                sums[g] += y;
                counts[g] += 1;
            }
            let between: f64 = sums
                .iter()
                .zip(&counts)
                .filter(|(_, c)| **c > 0)
                .map(|(s, &c)| c as f64 * (s / c as f64 - mean).powi(2))
                .sum();
            (between / total_ss).clamp(0.0, 1.0)
        })
        .collect();

    let sum: f64 = eta2.iter().sum();
    if sum > 0.0 {
        eta2.iter_mut().for_each(|e| *e /= sum);
    }
    let mut out: Vec<(String, f64)> = space
        .params
        .iter()
        .zip(eta2)
        .map(|(p, e)| (p.key.clone(), e))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1)); // stable: ties keep key order
    out
}

/// The group of each value: its option for choices, its quantile bin for numbers. Equal values
/// always share a bin (an integer parameter with few values gets at most one bin per value).
fn group_ids<'a>(
    dist: &Distribution,
    values: impl Iterator<Item = &'a super::Value>,
) -> Vec<usize> {
    let xs: Vec<f64> = values.map(|v| dist.to_internal(v).unwrap_or(0.0)).collect();
    if matches!(dist, Distribution::Choice(_)) {
        return xs.iter().map(|x| *x as usize).collect();
    }
    let n = xs.len();
    let bins = (n / 3).clamp(1, 4);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut ids = vec![0; n];
    let mut run_bin = 0;
    for (rank, &i) in order.iter().enumerate() {
        let starts_run = rank == 0 || xs[order[rank - 1]] != xs[i];
        if starts_run {
            run_bin = rank * bins / n;
        }
        ids[i] = run_bin;
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::tests::done;
    use crate::search::{Direction, RandomSampler, Sampler, TrialState, Value};

    fn space() -> SearchSpace {
        SearchSpace::from_texts([
            ("noise_a", "uniform(0.0, 1.0)"),
            ("lr", "loguniform(1e-5, 1e-2)"),
            ("sched", r#"choice(["linear", "cosine", "constant"])"#),
            ("layers", "int(0, 6)"),
        ])
        .unwrap()
    }

    fn trials(f: impl Fn(&[Value]) -> f64) -> Vec<Trial> {
        let space = space();
        let mut sampler = RandomSampler::new(11);
        let mut history = Vec::new();
        for n in 0..60 {
            let v = sampler.sample(&space, &history, Direction::Minimize);
            let y = f(&v);
            history.push(done(n, v, y));
        }
        history
    }

    #[test]
    fn the_only_relevant_continuous_param_dominates() {
        let history = trials(|v| match v[1] {
            Value::Float(lr) => (lr.log10() + 3.5).powi(2),
            _ => f64::NAN,
        });
        let imp = importance(&space(), &history);
        eprintln!("{imp:?}");
        assert_eq!(imp[0].0, "lr");
        assert!(imp[0].1 > 0.8, "{imp:?}");
        assert!((imp.iter().map(|(_, s)| s).sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(imp.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn the_only_relevant_choice_dominates_and_unfinished_trials_are_ignored() {
        let mut history = trials(|v| match v[2] {
            Value::Choice(c) => [0.1, 0.9, 0.5][c],
            _ => f64::NAN,
        });
        let imp = importance(&space(), &history);
        assert_eq!(imp[0].0, "sched");
        assert!(imp[0].1 > 0.8, "{imp:?}");
        // Pruned and failed trials, whatever their numbers, change nothing.
        for (n, state) in [(60, TrialState::Pruned), (61, TrialState::Failed)] {
            let mut t = done(n, history[0].values.clone(), 1e6);
            t.state = state;
            history.push(t);
        }
        assert_eq!(importance(&space(), &history), imp);
    }

    #[test]
    fn nothing_to_say_gives_zeros() {
        let constant = trials(|_| 0.5);
        assert!(
            importance(&space(), &constant)
                .iter()
                .all(|(_, s)| *s == 0.0)
        );
        let one = trials(|v| match v[0] {
            Value::Float(x) => x,
            _ => 0.0,
        });
        assert!(
            importance(&space(), &one[..1])
                .iter()
                .all(|(_, s)| *s == 0.0)
        );
        assert_eq!(importance(&space(), &[]).len(), 4);
    }

    #[test]
    fn quantile_bins_keep_equal_values_together() {
        let dist = Distribution::parse("k", "int(0, 6)").unwrap();
        let values: Vec<Value> = [1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 6]
            .map(Value::Int)
            .to_vec();
        let ids = group_ids(&dist, values.iter());
        // 12 values → 4 bins of 3 by rank, but the six 1s share bin 0.
        assert_eq!(ids, vec![0, 0, 0, 0, 0, 0, 2, 2, 2, 3, 3, 3]);
    }
}
