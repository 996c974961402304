//! Model cards of the tasks beyond single-label classification: the task's `pipeline_tag`
//! and `model-index` results (its own metric names), what the model outputs, a usage snippet
//! with the transformers class (or sentence-transformers) that loads the export and the
//! post-processing tunekit applies (sigmoid and per-label thresholds, first-piece tags, mean
//! pooling), and the thresholds or tag list the model needs.

use std::fmt::Write;

use super::{config_section, data_section, privacy_section, q, warnings_section};
use crate::config::RunConfig;
use crate::error::Result;
use crate::model::Pooling;
use crate::prep::DataReport;
use crate::task::{Scores, TaskKind, TaskMeta, kind_name};
use crate::train::RunMetrics;

/// The placeholder the usage snippets load the model from.
pub const MODEL_PLACEHOLDER: &str = "PATH_OR_HUB_ID_OF_THIS_MODEL";

/// How the Hub files a task: `pipeline_tag`, `model-index` task type and name, extra tags.
fn hub_task(kind: TaskKind) -> (&'static str, &'static str, &'static [&'static str]) {
    match kind {
        TaskKind::Multilabel => (
            "text-classification",
            "Multi-label Text Classification",
            &["text-classification", "multi-label-classification"],
        ),
        TaskKind::Regression => (
            "text-classification",
            "Text Regression",
            &["text-classification", "regression"],
        ),
        TaskKind::TokenClassification => (
            "token-classification",
            "Token Classification",
            &["token-classification", "ner"],
        ),
        TaskKind::Embedding => (
            "sentence-similarity",
            "Semantic Similarity",
            &[
                "sentence-transformers",
                "feature-extraction",
                "sentence-similarity",
            ],
        ),
        TaskKind::CausalLm => (
            "text-generation",
            "Text Generation",
            &["text-generation", "causal-lm", "sft"],
        ),
        TaskKind::Classification | TaskKind::PairClassification => (
            "text-classification",
            "Text Classification",
            &["text-classification"],
        ),
    }
}

/// The `model-index` metrics of a task: (Hub metric type, key in the scores, display name).
pub fn index_metrics(kind: TaskKind) -> &'static [(&'static str, &'static str, &'static str)] {
    match kind {
        TaskKind::Multilabel => &[
            ("f1", "micro_f1", "Micro F1"),
            ("f1", "macro_f1", "Macro F1"),
            ("accuracy", "subset_accuracy", "Subset accuracy"),
        ],
        TaskKind::Regression => &[
            ("mse", "mse", "MSE"),
            ("mae", "mae", "MAE"),
            ("pearsonr", "pearson", "Pearson r"),
            ("spearmanr", "spearman", "Spearman rho"),
        ],
        TaskKind::TokenClassification => &[
            ("precision", "precision", "Entity precision"),
            ("recall", "recall", "Entity recall"),
            ("f1", "f1", "Entity F1"),
            ("accuracy", "token_accuracy", "Word accuracy"),
        ],
        TaskKind::Embedding => &[
            ("mrr", "mrr", "MRR"),
            ("recall_at_1", "recall_at_1", "Recall@1"),
            ("recall_at_5", "recall_at_5", "Recall@5"),
        ],
        TaskKind::CausalLm => &[
            ("perplexity", "perplexity", "Perplexity"),
            ("loss", "loss", "Loss per target token"),
            ("accuracy", "token_accuracy", "Next-token accuracy"),
            (
                "exact_match",
                "exact_match",
                "Exact match of greedy answers",
            ),
        ],
        TaskKind::Classification | TaskKind::PairClassification => &[],
    }
}

/// What the model outputs, in one sentence.
fn description(kind: TaskKind, metrics: &RunMetrics) -> String {
    let labels = || {
        metrics
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kind {
        TaskKind::Multilabel => format!(
            "A multi-label text classifier: for each of {} labels ({}) it outputs an independent \
             probability (sigmoid), and a text gets every label whose probability reaches that \
             label's threshold (none, one or several)",
            metrics.labels.len(),
            labels()
        ),
        TaskKind::Regression => format!(
            "A text regression model: it outputs one real number per text (the target `{}`)",
            metrics.labels.first().map_or("value", String::as_str)
        ),
        TaskKind::TokenClassification => format!(
            "A token classifier (named-entity recognition): it tags every word with one of {} tags \
             ({}), read from the word's first word piece; consecutive tags form entities",
            metrics.labels.len(),
            labels()
        ),
        TaskKind::Embedding => "A sentence-embedding model: it maps a text to a unit-length \
             vector; texts that mean the same have a high cosine similarity"
            .to_string(),
        TaskKind::CausalLm => "A decoder language model fine-tuned on prompts and answers              (supervised fine-tuning): it continues a prompt, rendered with its chat template,              with the kind of answer the training data holds"
            .to_string(),
        TaskKind::Classification | TaskKind::PairClassification => "A text classifier".into(),
    }
}

/// Python that loads the exported model and computes what tunekit's `predict` computes.
fn usage(kind: TaskKind, config: &RunConfig, meta: Option<&TaskMeta>, lora: bool) -> String {
    if kind == TaskKind::CausalLm {
        return causal_lm_usage(config, lora);
    }
    let max_len = config.model.max_length;
    let mean = config.model.pooling == Pooling::Mean;
    let class = match kind {
        TaskKind::TokenClassification => "AutoModelForTokenClassification",
        TaskKind::Embedding => "AutoModel",
        _ => "AutoModelForSequenceClassification",
    };
    let (import, loader) = if lora {
        let peft = match kind {
            TaskKind::TokenClassification => "AutoPeftModelForTokenClassification",
            TaskKind::Embedding => "AutoPeftModelForFeatureExtraction",
            _ => "AutoPeftModelForSequenceClassification",
        };
        (
            format!("from peft import {peft}\nfrom transformers import AutoTokenizer\n"),
            format!("{peft}.from_pretrained(model_id).merge_and_unload()"),
        )
    } else {
        (
            format!("from transformers import {class}, AutoTokenizer\n"),
            format!("{class}.from_pretrained(model_id)"),
        )
    };
    let head = format!(
        "import torch\n{import}\nmodel_id = \"{MODEL_PLACEHOLDER}\"\ntokenizer = AutoTokenizer.from_pretrained(model_id)\nmodel = {loader}.eval()\ntexts = [\"The first text.\", \"Another one.\"]\n"
    );
    let batch = format!(
        "    batch = tokenizer(texts, padding=True, truncation=True, max_length={max_len}, return_tensors=\"pt\")\n"
    );
    // tunekit's sequence heads read either BERT's pooler ([CLS]) or the masked mean.
    let logits = if mean {
        "    hidden = model.base_model(**batch).last_hidden_state\n    mask = batch[\"attention_mask\"].unsqueeze(-1).to(hidden.dtype)\n    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean pooling, as trained\n    logits = model.classifier(pooled)\n"
    } else {
        "    logits = model(**batch).logits\n"
    };
    match kind {
        TaskKind::Multilabel => {
            let th = meta
                .map(|m| {
                    m.thresholds
                        .iter()
                        .map(|t| format!("{t}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            format!(
                "```python\n{head}thresholds = torch.tensor([{th}])  # per label, in id2label order\nwith torch.no_grad():\n{batch}{logits}    probabilities = torch.sigmoid(logits)\nlabels = [[model.config.id2label[i] for i, on in enumerate(row) if on] for row in (probabilities >= thresholds)]\nprint(labels)\n```\n"
            )
        }
        TaskKind::Regression => format!(
            "```python\n{head}with torch.no_grad():\n{batch}{logits}values = logits[:, 0].tolist()\nprint(values)\n```\n"
        ),
        TaskKind::TokenClassification => format!(
            "```python\n{head}words = [t.split() for t in texts]\nwith torch.no_grad():\n    batch = tokenizer(words, is_split_into_words=True, padding=True, truncation=True, max_length={max_len}, return_tensors=\"pt\")\n    predicted = model(**batch).logits.argmax(-1)\ntags = []\nfor i, sentence in enumerate(words):\n    # A word's tag is its first word piece's; words cut off by truncation are \"O\".\n    first = {{}}\n    for piece, word in enumerate(batch.word_ids(i)):\n        if word is not None and word not in first:\n            first[word] = model.config.id2label[int(predicted[i, piece])]\n    tags.append([first.get(w, \"O\") for w in range(len(sentence))])\nprint(tags)\n```\n\nOr `pipeline(\"token-classification\", model=model_id, aggregation_strategy=\"first\")` for entities with character offsets (its grouping of B-/I- tags can differ from seqeval's on malformed sequences).\n"
        ),
        TaskKind::Embedding if !lora => format!(
            "```python\nfrom sentence_transformers import SentenceTransformer\n\nmodel = SentenceTransformer(\"{MODEL_PLACEHOLDER}\")\ntexts = [\"The first text.\", \"Another one.\"]\nembeddings = model.encode(texts, normalize_embeddings=True)  # {} pooling, unit length\nprint(embeddings @ embeddings.T)  # cosine similarities\n```\n",
            if mean { "mean" } else { "[CLS]" }
        ),
        TaskKind::Embedding => {
            let pool = if mean {
                "    mask = batch[\"attention_mask\"].unsqueeze(-1).to(hidden.dtype)\n    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)\n"
            } else {
                "    pooled = hidden[:, 0]\n"
            };
            format!(
                "```python\n{head}with torch.no_grad():\n{batch}    hidden = model(**batch).last_hidden_state\n{pool}embeddings = torch.nn.functional.normalize(pooled, dim=-1)\nprint(embeddings @ embeddings.T)  # cosine similarities\n```\n"
            )
        }
        TaskKind::Classification | TaskKind::PairClassification | TaskKind::CausalLm => {
            String::new()
        }
    }
}

/// `model-index` entries of one split.
fn index_results(s: &mut String, kind: TaskKind, split: &str, dataset: &str, scores: &Scores) {
    let (pipeline, task_name, _) = hub_task(kind);
    let _ = writeln!(
        s,
        "  - task:\n      type: {pipeline}\n      name: {task_name}\n    dataset:\n      name: {}\n      type: {}\n      split: {split}\n    metrics:",
        q(dataset),
        q(dataset)
    );
    for (ty, key, name) in index_metrics(kind) {
        if let Some(v) = scores.get(*key).filter(|v| v.is_finite()) {
            let _ = writeln!(s, "    - type: {ty}\n      value: {v}\n      name: {name}");
            if *ty == "f1" && key.ends_with("_f1") {
                let avg = key.trim_end_matches("_f1");
                let _ = writeln!(s, "      args:\n        average: {avg}");
            }
        }
    }
}

/// The card of a task run (see [`super::render`]).
pub(super) fn render(
    config: &RunConfig,
    metrics: &RunMetrics,
    data: Option<&DataReport>,
    meta: Option<&TaskMeta>,
    lora: bool,
) -> Result<String> {
    let kind = metrics.task;
    let name = &config.run.name;
    let dataset = config
        .data
        .train
        .parent()
        .and_then(|p| p.file_name())
        .or_else(|| config.data.train.file_stem())
        .map_or_else(|| "data".into(), |f| f.to_string_lossy().into_owned());
    let (pipeline, _, tags) = hub_task(kind);
    let library = match (lora, kind) {
        (true, _) => "peft",
        (false, TaskKind::Embedding) => "sentence-transformers",
        _ => "transformers",
    };
    let mut s = String::from("---\n");
    let _ = writeln!(s, "library_name: {library}\npipeline_tag: {pipeline}");
    let _ = writeln!(s, "base_model: {}", q(&config.model.path));
    let _ = writeln!(s, "datasets:\n- {}", q(&dataset));
    s.push_str("metrics:\n");
    let mut seen = Vec::new();
    for (ty, _, _) in index_metrics(kind) {
        if !seen.contains(ty) {
            seen.push(ty);
            let _ = writeln!(s, "- {ty}");
        }
    }
    s.push_str("tags:\n- tunekit\n");
    for t in tags {
        let _ = writeln!(s, "- {t}");
    }
    if lora {
        s.push_str("- lora\n");
    }
    let _ = writeln!(s, "model-index:\n- name: {}\n  results:", q(name));
    let splits = [
        ("validation", &metrics.validation_scores),
        ("test", &metrics.test_scores),
    ];
    for (split, scores) in splits {
        if let Some(sc) = scores {
            index_results(&mut s, kind, split, &dataset, sc);
        }
    }
    s.push_str("---\n\n");

    let _ = writeln!(s, "# {name}\n");
    let _ = writeln!(
        s,
        "{}. Fine-tuned from `{}` with tunekit {} (`task.type = \"{}\"`){}.\n",
        description(kind, metrics),
        config.model.path,
        env!("CARGO_PKG_VERSION"),
        kind_name(kind),
        if lora {
            " as LoRA adapters (load with `peft`)"
        } else {
            ""
        }
    );
    results_section(&mut s, kind, metrics);
    task_details(&mut s, kind, metrics, meta);
    s.push_str("## Usage\n\n");
    s.push_str(&usage(kind, config, meta, lora));
    s.push_str(&format!(
        "\nInputs longer than {} tokens are truncated. tunekit applies the training run's text \
         cleaning (`tunekit.json` → `preprocess`) before tokenising; do the same for identical \
         outputs. `tunekit predict --model DIR` does all of this.\n\n",
        config.model.max_length
    ));
    privacy_section(&mut s, metrics);
    warnings_section(&mut s, metrics, data);
    data_section(&mut s, data);
    config_section(&mut s, config)?;
    s.push_str("## Intended use and limitations\n\n");
    s.push_str(intended_use(kind));
    s.push_str(
        "- Quality on data from another domain, time or population than the training data is \
         unknown and usually lower; the model inherits the biases of its base model and its data.\n\
         - Evaluate on your own held-out data before relying on it for decisions about people.\n",
    );
    Ok(s)
}

/// `## Results`: the task's scores per split, best checkpoint and cost.
fn results_section(s: &mut String, kind: TaskKind, metrics: &RunMetrics) {
    let names: Vec<&str> = kind
        .metrics()
        .iter()
        .copied()
        .filter(|n| *n != "loss")
        .collect();
    let _ = writeln!(
        s,
        "## Results\n\n| split | {} |\n|---|{}",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for (split, scores) in [
        ("validation (best checkpoint)", &metrics.validation_scores),
        ("test", &metrics.test_scores),
    ] {
        if let Some(sc) = scores {
            let cells: Vec<String> = names
                .iter()
                .map(|n| sc.get(*n).map_or_else(|| "-".into(), |v| format!("{v:.4}")))
                .collect();
            let _ = writeln!(s, "| {split} | {} |", cells.join(" | "));
        }
    }
    let _ = writeln!(
        s,
        "\nSelection metric `{}`; best checkpoint at step {} of {}{}; {} trainable parameters; {:.1} s of training ({:.1} examples/s).\n",
        metrics.metric,
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
}

/// Thresholds (multilabel), tags and per-type F1 (token classification).
fn task_details(s: &mut String, kind: TaskKind, metrics: &RunMetrics, meta: Option<&TaskMeta>) {
    match kind {
        TaskKind::Multilabel => {
            s.push_str("## Labels and decision thresholds\n\n");
            let th = meta.map(|m| m.thresholds.as_slice()).unwrap_or_default();
            if th.len() != metrics.labels.len() {
                s.push_str(
                    "The per-label thresholds are in `tunekit.json` → `task.thresholds`.\n\n",
                );
                return;
            }
            s.push_str("| label | threshold |\n|---|---|\n");
            for (l, t) in metrics.labels.iter().zip(th) {
                let _ = writeln!(s, "| {l} | {t:.4} |");
            }
            s.push_str("\nThe thresholds maximise each label's F1 on the validation split (or are `task.threshold` when set); they are also in `tunekit.json` → `task.thresholds`.\n\n");
        }
        TaskKind::TokenClassification => {
            let scheme = meta
                .and_then(|m| m.scheme)
                .map_or_else(|| "BIO".to_string(), |s| format!("{s:?}").to_uppercase());
            let _ = writeln!(
                s,
                "## Tags\n\nTag scheme {scheme}; tags (id order): {}.\n",
                metrics
                    .labels
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let test = metrics
                .test_scores
                .as_ref()
                .or(metrics.validation_scores.as_ref());
            let split = if metrics.test_scores.is_some() {
                "test"
            } else {
                "validation"
            };
            if let Some(sc) = test {
                let per: Vec<(&str, f64)> = sc
                    .iter()
                    .filter_map(|(k, v)| k.strip_prefix("f1/").map(|t| (t, *v)))
                    .collect();
                if !per.is_empty() {
                    let _ = writeln!(
                        s,
                        "Entity F1 per type on {split} (seqeval, default mode):\n\n| type | F1 |\n|---|---|"
                    );
                    for (t, v) in per {
                        let _ = writeln!(s, "| {t} | {v:.4} |");
                    }
                    s.push('\n');
                }
            }
        }
        _ => {}
    }
}

/// How to generate with a fine-tuned decoder: `tunekit generate`, and transformers for a full
/// fine-tune (a directory it loads) or PEFT over the base model for adapters.
fn causal_lm_usage(config: &RunConfig, lora: bool) -> String {
    let base = &config.model.path;
    let cli = if lora {
        format!(
            "tunekit generate --model {base} --adapter {MODEL_PLACEHOLDER} --prompt \"Your prompt\""
        )
    } else {
        format!("tunekit generate --model {MODEL_PLACEHOLDER} --prompt \"Your prompt\"")
    };
    let python = if lora {
        let load = if base.ends_with(".gguf") {
            format!(
                "base = AutoModelForCausalLM.from_pretrained(\"{dir}\", gguf_file=\"{file}\")\ntokenizer = AutoTokenizer.from_pretrained(\"{dir}\", gguf_file=\"{file}\")",
                dir = std::path::Path::new(base)
                    .parent()
                    .map_or(".".into(), |p| p.display().to_string()),
                file = std::path::Path::new(base)
                    .file_name()
                    .map_or(base.clone(), |f| f.to_string_lossy().into_owned()),
            )
        } else {
            format!(
                "base = AutoModelForCausalLM.from_pretrained(\"{base}\")\ntokenizer = AutoTokenizer.from_pretrained(\"{base}\")"
            )
        };
        format!(
            "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n{load}\nmodel = PeftModel.from_pretrained(base, \"{MODEL_PLACEHOLDER}\").merge_and_unload().eval()\n"
        )
    } else {
        format!(
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\nmodel = AutoModelForCausalLM.from_pretrained(\"{MODEL_PLACEHOLDER}\").eval()\ntokenizer = AutoTokenizer.from_pretrained(\"{MODEL_PLACEHOLDER}\")\n"
        )
    };
    let (cli_raw, encode) = if config.task.chat_template {
        (
            "",
            "messages = [{\"role\": \"user\", \"content\": \"Your prompt\"}]\nids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")\n",
        )
    } else {
        (
            " --raw",
            "ids = tokenizer(\"Your prompt\", return_tensors=\"pt\").input_ids  # trained without a chat template\n",
        )
    };
    format!(
        "```sh\n{cli}{cli_raw}\n```\n\n```python\n{python}{encode}out = model.generate(ids, max_new_tokens=64, do_sample=False)\nprint(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))\n```\n"
    )
}

fn intended_use(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Multilabel => {
            "- Intended for tagging texts like those in the training data with any subset of the labels above.\n\
             - The probabilities are per-label sigmoid outputs, not calibrated confidences; the thresholds were tuned on one validation split and may need re-tuning on your data.\n"
        }
        TaskKind::Regression => {
            "- Intended for scoring texts like those in the training data on the training target's scale.\n\
             - The output is unbounded: values outside the training range are extrapolations.\n"
        }
        TaskKind::TokenClassification => {
            "- Intended for finding the entity types above in text like the training data, one word per token as in the training files.\n\
             - Words past the maximum length are not tagged (tunekit predicts `O` for them and counts them).\n"
        }
        TaskKind::Embedding => {
            "- Intended for semantic search, clustering and similarity of texts like those in the training pairs.\n\
             - Compare embeddings with the cosine similarity (they are unit length); similarities are only comparable within this model.\n"
        }
        TaskKind::CausalLm => {
            "- Intended for prompts like those in the training data; it generates text, which can be wrong, and has no knowledge the base model and the training data did not give it.
             - Perplexity and loss are measured on the answer tokens of held-out records only (with `completion_only_loss`).
"
        }
        TaskKind::Classification | TaskKind::PairClassification => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_has_model_index_metrics_among_its_scores() {
        for kind in [
            TaskKind::Multilabel,
            TaskKind::Regression,
            TaskKind::TokenClassification,
            TaskKind::Embedding,
        ] {
            let m = index_metrics(kind);
            assert!(!m.is_empty());
            for (_, key, _) in m {
                assert!(kind.metrics().contains(key), "{kind:?}: {key}");
            }
        }
    }
}
