//! `tunekit data check`: the data validations a run makes before its first step, made by
//! the same functions, with nothing written.

use super::cv::{check_cv_options, cv_data, cv_fold};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::task::classification::prepare;

/// What `tunekit data check` shows: the data report `train` would write, produced by the
/// very functions `train` (and `train --cv`) run before their first step, so a file that
/// passes the check is not refused by `train` for its data.
#[derive(Debug, Clone)]
pub struct DataCheck {
    /// The data report as `data_report.json` holds it.
    pub report: serde_json::Value,
    /// The same report as text.
    pub text: String,
    /// What the head would be trained to output: classes, multilabel labels or NER tags
    /// (the target column for regression; empty for embedding).
    pub labels: Vec<String>,
}

/// Run every data validation `train` runs before its first step, for every task: the
/// model's position limit and tokenizer, reading, cleaning, splitting and de-duplication,
/// the label set (at least two classes; no unknown label in an evaluation split), targets
/// (multilabel labels, regression values, CoNLL tags), and with `cv = Some(k)` the checks of
/// `train --cv k` (class sizes against the folds). Errors are the ones `train` would give.
/// Not checked here: the pretrained weights themselves and a distillation teacher (both are
/// loaded, not validated, by `train`).
pub fn check_data(config: &RunConfig, cv: Option<usize>) -> Result<DataCheck> {
    if let Some(k) = cv {
        check_cv_options(config, k)?;
    }
    if !config.task.kind.is_classification() {
        let p = crate::task::run::prepare(config, None)?;
        return Ok(DataCheck {
            report: p.report,
            text: p.report_text,
            labels: p.labels,
        });
    }
    let (report, p) = match cv {
        None => {
            let p = prepare(config, None)?;
            (p.report.clone(), p)
        }
        Some(k) => {
            let cv = cv_data(config, k)?;
            // Every class has a row in every fold, so the folds share one label set: the
            // first fold's checks are every fold's.
            let p = prepare(config, Some(cv_fold(config, &cv, 0)))?;
            (cv.report, p)
        }
    };
    check_teacher(config, &p.labels)?;
    Ok(DataCheck {
        report: serde_json::to_value(&report).map_err(|e| Error::Report(e.to_string()))?,
        text: report.to_text(),
        labels: p.labels,
    })
}

/// What `distill` checks of its teacher before the first step (its position table against
/// `model.max_length`, its labels against the data's), from its config alone: `data check`
/// makes the same refusals without loading the teacher's weights.
pub(crate) fn check_teacher(config: &RunConfig, labels: &[String]) -> Result<()> {
    let Some(d) = &config.distill else {
        return Ok(());
    };
    let dir = crate::hub::resolve_model(&d.teacher)?;
    let teacher = crate::model::BertConfig::from_file(&dir.join("config.json"))?;
    crate::tokenize::check_max_length(config.model.max_length, &teacher, &dir)?;
    let teacher_labels = teacher.labels().filter(|l| !l.is_empty()).ok_or_else(|| {
        Error::Model(format!(
            "distill.teacher {}: config.json has no id2label: not a classification model (fine-tune it first)",
            d.teacher
        ))
    })?;
    if teacher_labels != labels {
        return Err(Error::Labels(format!(
            "distill.teacher {}: its labels {teacher_labels:?} differ from the training data's {labels:?}",
            d.teacher
        )));
    }
    Ok(())
}
