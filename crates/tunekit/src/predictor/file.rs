//! `tunekit predict` for every task: [`Predictor::predict_file`], JSONL out.
//!
//! One line per input, in input order, by task:
//! - classification: `line`, `label`, `score`, `probabilities` (label → probability);
//! - multilabel: `line`, `text`, `labels` (those at or over their threshold), `probabilities`;
//! - regression: `line`, `text`, `prediction`;
//! - token classification (CoNLL input): `line`, `words`, `tags`, `entities`,
//!   `words_truncated`;
//! - embedding: `line`, `text`, `embedding` (L2-normalised).

use std::io::Write;
use std::path::Path;

use super::Predictor;
use crate::data::{DataSpec, Example, example_iter, read_examples};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::infer::{PredictSummary, argmax, predict_probs, require_input};
use crate::task::predict::{Outputs, outputs};
use crate::task::{TaskKind, ner};
use crate::tokenize::Tokens;

impl Predictor {
    /// Predict every input of `input` and write JSONL to `output` (atomically: a failed run
    /// leaves no partial output). Classification streams `chunk` rows at a time and calls
    /// `on_progress` with the rows done; the other tasks read the whole file. For token
    /// classification `input.path` is a CoNLL file (one word per line, blank lines between
    /// sentences, tags ignored if present; only `input`'s encoding options apply); a truncated
    /// sentence's cut-off words are tagged `O` and counted in its line's `words_truncated`.
    pub fn predict_file(
        &self,
        input: &DataSpec,
        output: &Path,
        batch_size: usize,
        on_progress: impl FnMut(usize),
    ) -> Result<PredictSummary> {
        let (lines, summary) = match self.task.kind {
            TaskKind::Classification | TaskKind::PairClassification => {
                return self.predict_classes(input, output, batch_size, on_progress);
            }
            TaskKind::TokenClassification => self.conll_lines(input, batch_size)?,
            _ => self.table_lines(input, batch_size)?,
        };
        let mut buf = Vec::new();
        for l in &lines {
            serde_json::to_writer(&mut buf, l).map_err(|e| Error::Engine(e.to_string()))?;
            buf.write_all(b"\n").map_err(|e| Error::io(output, e))?;
        }
        write_atomic(output, &buf)?;
        Ok(summary)
    }

    fn conll_lines(
        &self,
        input: &DataSpec,
        batch_size: usize,
    ) -> Result<(Vec<serde_json::Value>, PredictSummary)> {
        let (sentences, _) =
            ner::read_conll_with(&input.path, false, input.encoding, input.replace_invalid)?;
        let words: Vec<Vec<String>> = sentences.iter().map(|s| s.words.clone()).collect();
        let enc = self.tokenizer.encode_words(&words)?;
        let tokens: Vec<Tokens> = enc.iter().map(|e| e.tokens.clone()).collect();
        let truncated = tokens.iter().filter(|t| t.truncated).count();
        let Outputs::Pieces(pieces, _) = outputs(
            self.task.kind,
            &self.model,
            &tokens,
            batch_size,
            self.tokenizer.pad_id(),
            &self.device,
        )?
        else {
            return Err(Error::Engine("unexpected outputs".into()));
        };
        let mut lines = Vec::with_capacity(sentences.len());
        for ((s, e), p) in sentences.iter().zip(&enc).zip(&pieces) {
            let seen = e
                .word_ids
                .iter()
                .flatten()
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let tags: Vec<String> = ner::word_predictions(&e.word_ids, p, s.words.len(), 0)
                .into_iter()
                .map(|id| self.labels.get(id).cloned().unwrap_or_else(|| "O".into()))
                .collect();
            let ents: Vec<serde_json::Value> = ner::entities(std::slice::from_ref(&tags))
                .into_iter()
                .map(|(ty, a, b)| {
                    serde_json::json!({"type": ty, "start": a, "end": b + 1, "text": s.words[a..=b].join(" ")})
                })
                .collect();
            lines.push(serde_json::json!({
                "line": s.line, "words": s.words, "tags": tags, "entities": ents,
                "words_truncated": s.words.len() - seen
            }));
        }
        let summary = PredictSummary {
            rows: lines.len(),
            truncated,
            dropped_empty_text: 0,
        };
        Ok((lines, summary))
    }

    fn table_lines(
        &self,
        spec: &DataSpec,
        batch_size: usize,
    ) -> Result<(Vec<serde_json::Value>, PredictSummary)> {
        let (examples, read) = read_examples(spec)?;
        require_input(examples.len(), &read, &spec.path)?;
        if read.empty_text_dropped > 0 {
            // Never a silently lost row: output lines + this count = rows in the file.
            tracing::warn!(
                "{}: {} rows dropped for an empty text: no output line for them",
                spec.path.display(),
                read.empty_text_dropped
            );
        }
        let tokens = self.tokenize(&examples)?;
        let truncated = tokens.iter().filter(|t| t.truncated).count();
        let out = outputs(
            self.task.kind,
            &self.model,
            &tokens,
            batch_size,
            self.tokenizer.pad_id(),
            &self.device,
        )?;
        let mut lines = Vec::with_capacity(examples.len());
        for (i, e) in examples.iter().enumerate() {
            let v = match &out {
                Outputs::Probs(p, _) => {
                    let labels: Vec<&str> = self.chosen_labels(&p[i]);
                    serde_json::json!({"line": e.line, "text": e.text, "labels": labels, "probabilities": p[i]})
                }
                Outputs::Values(v) => {
                    serde_json::json!({"line": e.line, "text": e.text, "prediction": v[i]})
                }
                Outputs::Embeddings(v) => {
                    serde_json::json!({"line": e.line, "text": e.text, "embedding": v[i]})
                }
                Outputs::Pieces(..) => serde_json::Value::Null,
            };
            lines.push(v);
        }
        let summary = PredictSummary {
            rows: lines.len(),
            truncated,
            dropped_empty_text: read.empty_text_dropped,
        };
        Ok((lines, summary))
    }

    /// Multilabel: the labels whose probability is at or over their tuned threshold.
    pub(crate) fn chosen_labels(&self, probs: &[f32]) -> Vec<&str> {
        probs
            .iter()
            .zip(&self.task.thresholds)
            .zip(&self.labels)
            .filter(|((pv, t), _)| f64::from(**pv) >= **t)
            .map(|(_, l)| l.as_str())
            .collect()
    }

    /// Classification: stream `chunk` rows at a time into a temp file, renamed at the end.
    fn predict_classes(
        &self,
        input: &DataSpec,
        output: &Path,
        batch_size: usize,
        mut on_progress: impl FnMut(usize),
    ) -> Result<PredictSummary> {
        let dir = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
        let mut w = std::io::BufWriter::new(tmp);
        let mut summary = PredictSummary::default();
        let mut chunk: Vec<Example> = Vec::with_capacity(1024);
        let mut iter = example_iter(input)?;
        loop {
            let next = iter.next();
            let done = next.is_none();
            if let Some(ex) = next {
                chunk.push(ex?);
            }
            if chunk.len() >= 1024 || (done && !chunk.is_empty()) {
                let tokens = self.tokenize(&chunk)?;
                summary.truncated += tokens.iter().filter(|t| t.truncated).count();
                let (probs, _) = predict_probs(
                    &self.model,
                    &tokens,
                    None,
                    batch_size,
                    self.tokenizer.pad_id(),
                    &self.device,
                )?;
                for (ex, p) in chunk.iter().zip(probs) {
                    let best = argmax(&p);
                    let scores: serde_json::Map<String, serde_json::Value> = self
                        .labels
                        .iter()
                        .zip(p.iter())
                        .map(|(l, &v)| (l.clone(), serde_json::json!(v)))
                        .collect();
                    let row = serde_json::json!({
                        "line": ex.line,
                        "label": self.labels[best],
                        "score": p[best],
                        "probabilities": scores,
                    });
                    writeln!(w, "{row}").map_err(|e| Error::io(output, e))?;
                }
                summary.rows += chunk.len();
                on_progress(summary.rows);
                chunk.clear();
            }
            if done {
                break;
            }
        }
        // Empty input writes nothing (the temp file is removed when dropped).
        require_input(summary.rows, iter.report(), &input.path)?;
        summary.dropped_empty_text = iter.report().empty_text_dropped;
        let tmp = w
            .into_inner()
            .map_err(|e| Error::io(output, e.into_error()))?;
        crate::fsutil::finish_temp(tmp.as_file(), output)?;
        tmp.persist(output)
            .map_err(|e| Error::io(output, e.error))?;
        Ok(summary)
    }
}
