//! Stratified K-fold cross-validation (`tunekit train --cv K`): each fold is a run of the
//! one loop in `RUN_DIR/fold-i`, on data prepared once.

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::{
    RunMetrics, TrainOptions, catch_panic, index_finish, index_start, run_dir_for, train_with_data,
};
use crate::config::RunConfig;
use crate::data::Example;
use crate::error::{Error, Result};
use crate::fsutil::write_json;
use crate::metrics::ClassificationMetrics;
use crate::model::ModelDir;
use crate::prep::{DataReport, PreparedData};
use crate::tokenize::TextTokenizer;

/// Mean and sample standard deviation of each metric over the folds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeanStd {
    /// Metric name → mean.
    pub mean: std::collections::BTreeMap<String, f64>,
    /// Metric name → standard deviation (n − 1).
    pub std: std::collections::BTreeMap<String, f64>,
}

/// `metrics.json` of a cross-validation run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CvMetrics {
    /// Number of folds.
    pub folds: usize,
    /// Each fold's run metrics (its run directory is `fold-N/`).
    pub per_fold: Vec<RunMetrics>,
    /// Over the folds' validation metrics (each fold validates on its held-out part).
    pub validation: MeanStd,
    /// Over the folds' test metrics, when there is a test split.
    pub test: Option<MeanStd>,
}

fn mean_std(all: &[&ClassificationMetrics]) -> MeanStd {
    let mut out = MeanStd {
        mean: Default::default(),
        std: Default::default(),
    };
    for name in ["accuracy", "macro_f1", "micro_f1", "weighted_f1", "loss"] {
        let values: Vec<f64> = all.iter().filter_map(|m| m.get(name)).collect();
        if values.is_empty() {
            continue;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        out.mean.insert(name.into(), mean);
        out.std.insert(name.into(), var.sqrt());
    }
    out
}

/// Stratified K-fold cross-validation: the prepared training data (plus the validation file,
/// if any) is split into `k` folds; fold i trains on the others and validates on fold i, in
/// `RUN_DIR/fold-i`; the test split, if any, is evaluated by every fold. Writes
/// `RUN_DIR/metrics.json` with per-fold results and mean ± std.
pub fn cross_validate(
    config: &RunConfig,
    options: &TrainOptions,
    k: usize,
    device: &Device,
) -> Result<CvMetrics> {
    check_cv_options(config, k)?;
    let run_dir = run_dir_for(config, options);
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    let index = index_start(config, &run_dir, "cv");
    let result = catch_panic(|| cross_validate_in(config, options, k, device, &run_dir));
    let outcome = match &result {
        Ok(cv) => Ok(crate::index::Outcome {
            train_time_s: Some(cv.per_fold.iter().map(|m| m.train_time_s).sum()),
            steps: Some(cv.per_fold.iter().map(|m| m.steps as i64).sum()),
            validation_accuracy: cv.validation.mean.get("accuracy").copied(),
            validation_macro_f1: cv.validation.mean.get("macro_f1").copied(),
            test_accuracy: cv
                .test
                .as_ref()
                .and_then(|t| t.mean.get("accuracy").copied()),
            test_macro_f1: cv
                .test
                .as_ref()
                .and_then(|t| t.mean.get("macro_f1").copied()),
            metrics: std::fs::read_to_string(run_dir.join("metrics.json")).ok(),
        }),
        Err(e) => Err(("failed", e.to_string())),
    };
    index_finish(index, &run_dir, outcome);
    result
}

/// The options of `--cv K` that need no data: at least two folds, a classification task.
pub(crate) fn check_cv_options(config: &RunConfig, k: usize) -> Result<()> {
    if k < 2 {
        return Err(Error::Config(format!(
            "--cv needs at least 2 folds, got {k}"
        )));
    }
    if config.privacy.dp.is_some() {
        // k models trained on overlapping folds each spend ε on the same examples.
        return Err(Error::Config(
            "[privacy.dp] (differential privacy) refuses --cv: the folds' models are trained on overlapping data, so their ε compose and the run would release k models under one guarantee that does not cover them".into(),
        ));
    }
    if !config.task.kind.is_classification() {
        return Err(Error::Config(format!(
            "--cv is for classification; task.type = \"{}\" trains with train/validation/test splits",
            crate::task::kind_name(config.task.kind)
        )));
    }
    Ok(())
}

/// What the folds of cross-validation are drawn from.
pub(crate) struct CvData {
    /// The data report of the pipeline run (no validation carved: folds validate).
    pub(crate) report: DataReport,
    /// Prepared training rows plus the validation file's, if any.
    pool: Vec<Example>,
    /// The test split, evaluated by every fold.
    test: Option<crate::prep::PreparedSplit>,
    /// Fold of each pool row.
    fold_of: Vec<usize>,
}

/// Prepare the data of `--cv k` and assign the folds; a class with fewer than `k` rows is
/// refused here, before any fold trains (see [`crate::prep::split::classes_below`]).
pub(crate) fn cv_data(config: &RunConfig, k: usize) -> Result<CvData> {
    let model_dir = ModelDir::open(&config.model.path)?;
    let tokenizer = TextTokenizer::for_model(
        &model_dir.tokenizer_path(),
        config.model.max_length,
        &model_dir.config,
    )?;
    // Validation comes from the folds, so none is carved out of train.
    let mut prep_config = config.clone();
    if let Some(split) = prep_config.data.split.as_mut() {
        split.validation = 0.0;
    }
    let data = crate::prep::prepare(&prep_config, Some(&tokenizer))?;
    let mut pool: Vec<Example> = Vec::new();
    let mut test = None;
    for split in data.splits {
        match split.name.as_str() {
            "test" => test = Some(split),
            _ => pool.extend(split.examples),
        }
    }
    let labels: Vec<&str> = pool
        .iter()
        .map(|e| e.label.as_deref().unwrap_or(""))
        .collect();
    let small = crate::prep::split::classes_below(&labels, k);
    if !small.is_empty() {
        let named: Vec<String> = small
            .iter()
            .map(|(l, n)| format!("{l:?} has {n} row{}", if *n == 1 { "" } else { "s" }))
            .collect();
        return Err(Error::Labels(format!(
            "--cv {k}: every class needs at least {k} rows (one per fold) after data preparation, but class {} ({}); use fewer folds or add rows of {}",
            named.join(", class "),
            config.data.train.display(),
            if small.len() == 1 {
                "that class"
            } else {
                "those classes"
            }
        )));
    }
    let seed = config
        .data
        .split
        .as_ref()
        .map_or(config.train.seed, |s| s.seed);
    let fold_of = crate::prep::split::stratified_folds(&labels, k, seed);
    Ok(CvData {
        report: data.report,
        pool,
        test,
        fold_of,
    })
}

/// The prepared data of one fold: the other folds train, this one validates.
pub(crate) fn cv_fold(config: &RunConfig, cv: &CvData, fold: usize) -> PreparedData {
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (e, &f) in cv.pool.iter().zip(&cv.fold_of) {
        if f == fold {
            held.push(e.clone());
        } else {
            train.push(e.clone());
        }
    }
    let file = config.data.train.clone();
    let mut splits = vec![
        crate::prep::PreparedSplit {
            name: "train".into(),
            file: file.clone(),
            examples: train,
            token_lengths: None,
        },
        crate::prep::PreparedSplit {
            name: "validation".into(),
            file,
            examples: held,
            token_lengths: None,
        },
    ];
    splits.extend(cv.test.clone());
    PreparedData {
        splits,
        report: cv.report.clone(),
    }
}

fn cross_validate_in(
    config: &RunConfig,
    options: &TrainOptions,
    k: usize,
    device: &Device,
    run_dir: &Path,
) -> Result<CvMetrics> {
    let cv = cv_data(config, k)?;
    cv.report.write(run_dir)?;
    let mut per_fold = Vec::with_capacity(k);
    for fold in 0..k {
        tracing::info!("cross-validation: fold {} of {k}", fold + 1);
        let fold_options = TrainOptions {
            run_dir: Some(run_dir.join(format!("fold-{}", fold + 1))),
            ..options.clone()
        };
        let metrics = train_with_data(
            config,
            &fold_options,
            device,
            Some(cv_fold(config, &cv, fold)),
        )?;
        per_fold.push(metrics);
    }
    let validation: Vec<&ClassificationMetrics> = per_fold
        .iter()
        .filter_map(|m| m.validation.as_ref())
        .collect();
    let tests: Vec<&ClassificationMetrics> =
        per_fold.iter().filter_map(|m| m.test.as_ref()).collect();
    let cv = CvMetrics {
        folds: k,
        validation: mean_std(&validation),
        test: (!tests.is_empty()).then(|| mean_std(&tests)),
        per_fold,
    };
    write_json(&run_dir.join("metrics.json"), &cv)?;
    Ok(cv)
}
