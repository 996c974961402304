//! Regression: one output per text (or pair), mean squared error — `transformers`'
//! `problem_type = "regression"` (`num_labels = 1`, `MSELoss`). Scores are
//! [`crate::metrics::scores::regression_metrics`] (checked against scikit-learn and SciPy) and
//! the RMSE.

use std::path::Path;

use burn::tensor::Tensor;

use super::Scores;
use crate::data::Example;
use crate::error::{Error, Result};

/// The target of every example, parsed from its label column; a value that is not a finite
/// number is an error naming the file and line.
pub fn targets(examples: &[Example], file: &Path) -> Result<Vec<f32>> {
    examples
        .iter()
        .map(|e| {
            let raw = e.label.as_deref().unwrap_or("").trim();
            match raw.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v as f32),
                _ => Err(Error::Input(format!(
                    "{}:{}: regression target {raw:?} is not a finite number",
                    file.display(),
                    e.line
                ))),
            }
        })
        .collect()
}

/// Summed squared error of predictions `[n, 1]` against targets `[n]`.
pub fn squared_error_sum(predictions: Tensor<2>, targets: Tensor<1>) -> Tensor<1> {
    let diff = predictions.squeeze_dim::<1>(1) - targets;
    diff.powf_scalar(2.0).sum()
}

/// MSE, RMSE, MAE, R², Pearson and Spearman of predictions against targets; `loss` is the MSE.
pub fn scores(predictions: &[f32], targets: &[f32]) -> Scores {
    let p: Vec<f64> = predictions.iter().map(|&v| f64::from(v)).collect();
    let t: Vec<f64> = targets.iter().map(|&v| f64::from(v)).collect();
    let m = crate::metrics::scores::regression_metrics(&p, &t);
    Scores::from([
        ("mse".to_string(), m.mse),
        ("rmse".to_string(), m.mse.sqrt()),
        ("mae".to_string(), m.mae),
        ("r2".to_string(), m.r2),
        ("pearson".to_string(), m.pearson),
        ("spearman".to_string(), m.spearman),
        ("loss".to_string(), m.mse),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_the_line_of_a_non_number() {
        let ex = |l: &str, line| Example {
            text: "t".into(),
            text_pair: None,
            label: Some(l.into()),
            line,
        };
        let ok = targets(&[ex(" 2.5", 2), ex("-1e-1", 3)], Path::new("d.tsv")).unwrap();
        assert_eq!(ok, vec![2.5, -0.1]);
        let e = targets(&[ex("1", 2), ex("high", 3)], Path::new("d.tsv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.tsv:3") && e.contains("high"), "{e}");
        assert!(targets(&[ex("NaN", 4)], Path::new("d.tsv")).is_err());
    }
}
