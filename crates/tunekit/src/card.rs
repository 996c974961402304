//! The model card: `model/README.md` in Hugging Face's format (YAML front matter with
//! `library_name`, `pipeline_tag`, `base_model`, `datasets`, `metrics` and `model-index`
//! results), then what a reader needs to trust or reject the model: results, per-class
//! numbers, the data it saw, the exact training config, intended use and limitations.

mod tasks;

use std::fmt::Write;
use std::path::Path;

use crate::config::RunConfig;
use crate::error::Result;
use crate::metrics::ClassificationMetrics;
use crate::prep::DataReport;
use crate::train::RunMetrics;

/// A YAML/JSON string literal (YAML accepts JSON's double-quoted strings).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn metric_rows(out: &mut String, split: &str, m: &ClassificationMetrics) {
    let _ = writeln!(
        out,
        "| {split} | {:.4} | {:.4} | {:.4} | {:.4} | {} |",
        m.accuracy, m.macro_f1, m.micro_f1, m.weighted_f1, m.support
    );
}

/// Render the card for a finished run of any task. `data` is the run's data report (`None`
/// for token classification, whose CoNLL report is not a [`DataReport`]); `meta` is the
/// exported model's task metadata (`tunekit.json` → `task`: multilabel thresholds, tag
/// scheme), `None` for classification.
pub fn render(
    config: &RunConfig,
    metrics: &RunMetrics,
    data: Option<&DataReport>,
    meta: Option<&crate::task::TaskMeta>,
    lora: bool,
) -> Result<String> {
    if !metrics.task.is_classification() {
        return tasks::render(config, metrics, data, meta, lora);
    }
    let mut s = String::new();
    let name = &config.run.name;
    let dataset = config
        .data
        .train
        .file_stem()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let dataset_dir = config
        .data
        .train
        .parent()
        .and_then(|p| p.file_name())
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or(dataset);
    s.push_str("---\n");
    let _ = writeln!(
        s,
        "library_name: {}",
        if lora { "peft" } else { "transformers" }
    );
    s.push_str("pipeline_tag: text-classification\n");
    let _ = writeln!(s, "base_model: {}", q(&config.model.path));
    let _ = writeln!(s, "datasets:\n- {}", q(&dataset_dir));
    s.push_str("metrics:\n- accuracy\n- f1\n");
    s.push_str("tags:\n- tunekit\n- text-classification\n");
    if lora {
        s.push_str("- lora\n");
    }
    s.push_str("model-index:\n");
    let _ = writeln!(s, "- name: {}", q(name));
    s.push_str("  results:\n");
    for (split, m) in [("validation", &metrics.validation), ("test", &metrics.test)] {
        let Some(m) = m else { continue };
        s.push_str("  - task:\n      type: text-classification\n      name: Text Classification\n");
        let _ = writeln!(
            s,
            "    dataset:\n      name: {}\n      type: {}\n      split: {split}",
            q(&dataset_dir),
            q(&dataset_dir)
        );
        s.push_str("    metrics:\n");
        let _ = writeln!(
            s,
            "    - type: accuracy\n      value: {}\n      name: Accuracy",
            m.accuracy
        );
        let _ = writeln!(
            s,
            "    - type: f1\n      value: {}\n      name: Macro F1\n      args:\n        average: macro",
            m.macro_f1
        );
    }
    s.push_str("---\n\n");

    let _ = writeln!(s, "# {name}\n");
    let _ = writeln!(
        s,
        "A text classifier ({} labels: {}) fine-tuned from `{}` with tunekit {}{}.\n",
        metrics.labels.len(),
        metrics
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", "),
        config.model.path,
        env!("CARGO_PKG_VERSION"),
        if lora {
            " as LoRA adapters (load with `peft`, or `tunekit merge` for a plain model)"
        } else {
            ""
        }
    );

    s.push_str("## Results\n\n| split | accuracy | macro-F1 | micro-F1 | weighted-F1 | examples |\n|---|---|---|---|---|---|\n");
    if let Some(m) = &metrics.validation {
        metric_rows(&mut s, "validation (best checkpoint)", m);
    }
    if let Some(m) = &metrics.test {
        metric_rows(&mut s, "test", m);
        s.push_str("\nPer class on test:\n\n| label | precision | recall | F1 | support |\n|---|---|---|---|---|\n");
        for c in &m.per_class {
            let _ = writeln!(
                s,
                "| {} | {:.4} | {:.4} | {:.4} | {} |",
                c.label, c.precision, c.recall, c.f1, c.support
            );
        }
    }
    let _ = writeln!(
        s,
        "\nBest checkpoint at step {} of {}{}; {} trainable parameters; {:.1} s of training ({:.1} examples/s).\n",
        metrics
            .best_step
            .map_or_else(|| "-".to_string(), |b| b.to_string()),
        metrics.steps,
        if metrics.stopped_early {
            " (early stopping)"
        } else {
            ""
        },
        metrics.trainable_parameters,
        metrics.train_time_s,
        metrics.train_examples_per_s
    );

    privacy_section(&mut s, metrics);
    warnings_section(&mut s, metrics, data);
    data_section(&mut s, data);
    config_section(&mut s, config)?;

    s.push_str("## Intended use and limitations\n\n");
    let _ = writeln!(
        s,
        "- Intended for classifying texts like those in the training data (`{}`) into the labels above; \
         inputs longer than {} tokens are truncated.",
        config.data.train.display(),
        config.model.max_length
    );
    s.push_str(
        "- The scores are softmax probabilities of a fine-tuned model, not calibrated confidences; \
         check calibration on your own data before thresholding them.\n\
         - Accuracy on data from another domain, time or population than the training data is \
         unknown and usually lower; the model inherits the biases of its base model and its data.\n\
         - Evaluate on your own held-out data before relying on it for decisions about people.\n",
    );
    Ok(s)
}

/// `## Differential privacy`: the (ε, δ) a DP-SGD run spent, how, and what the guarantee
/// covers (nothing for other runs).
pub(crate) fn privacy_section(s: &mut String, metrics: &RunMetrics) {
    let Some(p) = &metrics.privacy else {
        return;
    };
    s.push_str("## Differential privacy\n\n");
    let _ = writeln!(
        s,
        "Trained with DP-SGD: ({:.3}, {:e})-differentially private ({} accountant) over {} noisy steps, \
         each example's gradient clipped to {} (L2, all trainable parameters), noise multiplier {:.4}, \
         Poisson sampling at rate {:.4e}{}.\n\n{}\n",
        p.epsilon,
        p.delta,
        p.accountant.name(),
        p.steps,
        p.max_grad_norm,
        p.noise_multiplier,
        p.sample_rate,
        p.target_epsilon
            .map_or(String::new(), |t| format!("; target ε {t}")),
        crate::dp::GUARANTEE
    );
}

/// `## Warnings`: the run's and the data report's (nothing when there are none).
fn warnings_section(s: &mut String, metrics: &RunMetrics, data: Option<&DataReport>) {
    let warnings: Vec<&String> = metrics
        .warnings
        .iter()
        .chain(data.map(|d| &d.warnings).into_iter().flatten())
        .collect();
    if !warnings.is_empty() {
        s.push_str("## Warnings\n\n");
        for w in warnings {
            let _ = writeln!(s, "- {w}");
        }
        s.push('\n');
    }
}

/// `## Data`: one row per split of the data report, or where the report is.
fn data_section(s: &mut String, data: Option<&DataReport>) {
    let Some(data) = data else {
        s.push_str("## Data\n\nThe data report is `data_report.json` in the run directory.\n\n");
        return;
    };
    s.push_str("## Data\n\n| split | file | rows read | kept | dropped | labels |\n|---|---|---|---|---|---|\n");
    for sp in &data.splits {
        let dropped: Vec<String> = sp.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let labels: Vec<String> = sp
            .label_counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "| {} | `{}` | {} | {} | {} | {} |",
            sp.split,
            sp.file.display(),
            sp.rows_read,
            sp.examples,
            if dropped.is_empty() {
                "-".to_string()
            } else {
                dropped.join(", ")
            },
            labels.join(", ")
        );
    }
    s.push_str("\nThe full data report is `data_report.txt` in the run directory.\n\n");
}

/// `## Training configuration`: the run's config as TOML.
fn config_section(s: &mut String, config: &RunConfig) -> Result<()> {
    s.push_str("## Training configuration\n\n```toml\n");
    s.push_str(&config.to_toml()?);
    s.push_str("```\n\n");
    Ok(())
}

/// Write the card of a finished run of any task to `dir/README.md` atomically. `dir` is the
/// exported model directory; for a task run its `tunekit.json` must already be written (the
/// card reads the multilabel thresholds and the tag scheme from it). `data` is the run's data
/// report, `None` where it is not a [`DataReport`] (token classification).
pub fn write(
    dir: &Path,
    config: &RunConfig,
    metrics: &RunMetrics,
    data: Option<&DataReport>,
    lora: bool,
) -> Result<()> {
    let meta = if metrics.task.is_classification() {
        None
    } else {
        crate::fsutil::read_json::<crate::infer::ModelMeta>(&dir.join(crate::model::TUNEKIT_META))
            .ok()
            .and_then(|m| m.task)
    };
    let text = render(config, metrics, data, meta.as_ref(), lora)?;
    crate::fsutil::write_atomic(&dir.join("README.md"), text.as_bytes())
}
