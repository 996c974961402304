//! `tunekit compress-report`: the same measurements for several versions of one model (base,
//! pruned, distilled student, …) on one labelled file, as a table — size on disk, parameters,
//! batch-1 latency, batch-32 throughput and accuracy — so the cost of each compression is read
//! in one place.
//!
//! Latency: the first `latency_inputs` texts one at a time (tokenised beforehand, so only the
//! model is timed), median and 90th percentile. Throughput: the whole file in batches of 32
//! (sorted by length, as `eval` does), examples per second. Accuracy: `eval`'s.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use serde::Serialize;

use crate::data::{DataSpec, read_examples};
use crate::error::Result;
use crate::infer::{evaluate_tokens, label_ids, predict_probs};
use crate::predictor::Predictor;

/// One model's row.
#[derive(Debug, Clone, Serialize)]
pub struct CompressRow {
    /// The model directory as given.
    pub model: String,
    /// Parameters (zeroed weights count).
    pub parameters: usize,
    /// Bytes of weight files (`*.safetensors`) in the directory.
    pub weight_bytes: u64,
    /// Batch-1 latency, median (ms).
    pub latency_p50_ms: f64,
    /// Batch-1 latency, 90th percentile (ms).
    pub latency_p90_ms: f64,
    /// Examples per second at batch 32.
    pub batch32_examples_per_s: f64,
    /// Accuracy on the file.
    pub accuracy: f64,
    /// Macro F1 on the file.
    pub macro_f1: f64,
}

fn weight_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Measure `model` on the labelled file `spec`.
pub fn measure(
    model: &str,
    spec: &DataSpec,
    latency_inputs: usize,
    device: &Device,
) -> Result<CompressRow> {
    let clf = Predictor::load(model, None, device)?;
    // Accuracy and macro F1 are classification metrics: another task is refused, naming it.
    clf.require_classifier("compress-report")?;
    let (examples, read) = read_examples(spec)?;
    crate::infer::require_input(examples.len(), &read, &spec.path)?;
    let labels = label_ids(&examples, &clf.labels, &spec.path)?;
    let tokens = clf.tokenize(&examples)?;
    crate::infer::log_truncated(&tokens, clf.tokenizer.max_length(), "rows");
    let pad = clf.tokenizer.pad_id();
    // Warm-up (allocator, thread pool), then batch-1 latency.
    let n = latency_inputs.min(tokens.len());
    predict_probs(&clf.model, &tokens[..n.min(4)], None, 1, pad, device)?;
    let mut times: Vec<f64> = Vec::with_capacity(n);
    for t in &tokens[..n] {
        let start = Instant::now();
        predict_probs(&clf.model, std::slice::from_ref(t), None, 1, pad, device)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let start = Instant::now();
    let metrics = evaluate_tokens(&clf.model, &tokens, &labels, &clf.labels, 32, pad, device)?;
    let secs = start.elapsed().as_secs_f64();
    Ok(CompressRow {
        model: model.to_string(),
        parameters: clf.model.num_params(),
        weight_bytes: weight_bytes(&clf.dir),
        latency_p50_ms: percentile(&times, 0.5),
        latency_p90_ms: percentile(&times, 0.9),
        batch32_examples_per_s: tokens.len() as f64 / secs.max(1e-9),
        accuracy: metrics.accuracy,
        macro_f1: metrics.macro_f1,
    })
}

/// The rows as a Markdown table, with each model's change against the first.
pub fn table(rows: &[CompressRow]) -> String {
    let mut out = String::from(
        "| model | parameters | weights on disk | batch-1 latency p50 / p90 (ms) | batch-32 throughput (examples/s) | accuracy | Δ accuracy |\n|---|---|---|---|---|---|---|\n",
    );
    let base = rows.first().map_or(0.0, |r| r.accuracy);
    for r in rows {
        out.push_str(&format!(
            "| `{}` | {:.2} M | {:.1} MiB | {:.1} / {:.1} | {:.1} | {:.4} | {:+.4} |\n",
            r.model,
            r.parameters as f64 / 1e6,
            r.weight_bytes as f64 / (1024.0 * 1024.0),
            r.latency_p50_ms,
            r.latency_p90_ms,
            r.batch32_examples_per_s,
            r.accuracy,
            r.accuracy - base
        ));
    }
    out
}
