//! Learning-rate schedules as pure functions of the optimiser step.
//!
//! Written here rather than taken from `burn::lr_scheduler` because (1) burn's linear scheduler
//! rejects an initial rate of 0, so it cannot express the warm-up from zero that HF Trainer uses
//! (`lr(0) = 0`), and (2) a pure function of the step needs no state in checkpoints, so a
//! resumed run uses exactly the rates an uninterrupted run would.

use crate::config::SchedulerKind;

/// A schedule over `total` optimiser steps with `warmup` warm-up steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Shape of the schedule.
    pub kind: SchedulerKind,
    /// Peak learning rate.
    pub base_lr: f64,
    /// Warm-up steps (linear from 0).
    pub warmup: usize,
    /// Total optimiser steps.
    pub total: usize,
}

impl Schedule {
    /// Learning rate for optimiser step `step` (0-based), exactly as `transformers`'
    /// `get_{constant,linear,cosine}_schedule_with_warmup` compute it.
    pub fn lr(&self, step: usize) -> f64 {
        let s = step as f64;
        if step < self.warmup {
            return self.base_lr * s / (self.warmup.max(1) as f64);
        }
        let decay_steps = (self.total.saturating_sub(self.warmup)).max(1) as f64;
        let progress = (s - self.warmup as f64) / decay_steps;
        let factor = match self.kind {
            SchedulerKind::Constant => 1.0,
            SchedulerKind::Linear => ((self.total as f64 - s) / decay_steps).max(0.0),
            SchedulerKind::Cosine => {
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        };
        self.base_lr * factor
    }
}

/// Warm-up steps: explicit steps if given, else `ceil(ratio × total)` as HF Trainer does.
pub fn warmup_steps(total: usize, ratio: f64, steps: usize) -> usize {
    if steps > 0 {
        steps
    } else {
        (ratio * total as f64).ceil() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_transformers() {
        // Values from transformers.get_linear_schedule_with_warmup(opt, 3, 10) with lr 1.0.
        let s = Schedule {
            kind: SchedulerKind::Linear,
            base_lr: 1.0,
            warmup: 3,
            total: 10,
        };
        let got: Vec<f64> = (0..11).map(|i| s.lr(i)).collect();
        let want = [
            0.0,
            1.0 / 3.0,
            2.0 / 3.0,
            1.0,
            6.0 / 7.0,
            5.0 / 7.0,
            4.0 / 7.0,
            3.0 / 7.0,
            2.0 / 7.0,
            1.0 / 7.0,
            0.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
    }

    #[test]
    fn cosine_reaches_zero_and_is_half_at_midpoint() {
        let s = Schedule {
            kind: SchedulerKind::Cosine,
            base_lr: 2.0,
            warmup: 0,
            total: 10,
        };
        assert!((s.lr(0) - 2.0).abs() < 1e-12);
        assert!((s.lr(5) - 1.0).abs() < 1e-12);
        assert!(s.lr(10).abs() < 1e-12);
    }

    #[test]
    fn constant_with_warmup() {
        let s = Schedule {
            kind: SchedulerKind::Constant,
            base_lr: 0.5,
            warmup: 2,
            total: 10,
        };
        assert_eq!(s.lr(0), 0.0);
        assert_eq!(s.lr(1), 0.25);
        assert_eq!(s.lr(9), 0.5);
    }

    #[test]
    fn warmup_ratio_rounds_up_like_trainer() {
        assert_eq!(warmup_steps(795, 0.1, 0), 80);
        assert_eq!(warmup_steps(795, 0.1, 7), 7);
    }
}
