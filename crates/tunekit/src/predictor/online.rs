//! Predictions for in-memory texts (`tunekit serve`): texts are encoded by a
//! [`TextEncoder`] (cheap to clone; request threads use it), the model runs the encoded
//! inputs in one batch ([`Predictor::predict_encoded`]) and answers one typed [`Prediction`]
//! per text.

use serde::Serialize;

use super::Predictor;
use crate::error::{Error, Result};
use crate::infer::predict_probs;
use crate::task::predict::{Outputs, outputs};
use crate::task::{TaskKind, ner};
use crate::tokenize::{TextTokenizer, Tokens, WordSpan};

/// The tokenisation half of a [`Predictor`]: tokenizer, training-time preprocessing and the
/// task (which decides how a raw text becomes model input).
#[derive(Clone)]
pub struct TextEncoder {
    /// The model's tokenizer at its max length.
    pub tokenizer: TextTokenizer,
    /// Training-time text preprocessing (cleaning, de-identification).
    pub preprocess: Option<crate::prep::TextPreprocess>,
    /// The task.
    pub kind: TaskKind,
}

/// One text as model input.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Word pieces (special tokens included).
    pub tokens: Tokens,
    /// Token classification: the text's words with their character spans, and the word
    /// index of every piece; empty otherwise.
    pub words: Vec<WordSpan>,
    /// Word index of each piece (`None` for special tokens); empty unless token
    /// classification.
    pub word_ids: Vec<Option<u32>>,
    /// The text as given (token classification answers with slices of it).
    pub text: String,
}

impl TextEncoder {
    /// Encode raw texts for the task: sequence tasks see the preprocessed text; token
    /// classification splits each text into words with the tokenizer's pre-tokenizer, as
    /// training's CoNLL words were given, and keeps each word's character span (no
    /// preprocessing: entity offsets refer to the text as sent).
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        if self.kind == TaskKind::TokenClassification {
            let words: Vec<Vec<WordSpan>> = texts
                .iter()
                .map(|t| self.tokenizer.words_with_offsets(t))
                .collect::<Result<_>>()?;
            let plain: Vec<Vec<String>> = words
                .iter()
                .map(|w| w.iter().map(|s| s.word.clone()).collect())
                .collect();
            let enc = self.tokenizer.encode_words(&plain)?;
            return Ok(enc
                .into_iter()
                .zip(words)
                .zip(texts)
                .map(|((e, w), t)| Encoded {
                    tokens: e.tokens,
                    words: w,
                    word_ids: e.word_ids,
                    text: (*t).to_string(),
                })
                .collect());
        }
        let prepared: Vec<std::borrow::Cow<str>> = texts
            .iter()
            .map(|t| match &self.preprocess {
                Some(p) => std::borrow::Cow::Owned(p.apply(t)),
                None => std::borrow::Cow::Borrowed(*t),
            })
            .collect();
        let refs: Vec<&str> = prepared.iter().map(|t| t.as_ref()).collect();
        let tokens = self.tokenizer.encode_batch(&refs, None)?;
        Ok(tokens
            .into_iter()
            .zip(texts)
            .map(|(tokens, t)| Encoded {
                tokens,
                words: Vec::new(),
                word_ids: Vec::new(),
                text: (*t).to_string(),
            })
            .collect())
    }
}

/// An entity found in a text, in the Hugging Face Inference API's token-classification
/// shape (`aggregation_strategy="simple"`): the entity type, the mean probability of its
/// words' tags, the covered text, and its character span `[start, end)` in the input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntitySpan {
    /// The entity type (`PER`, `LOC`, …: the tag without its `B-`/`I-` prefix).
    pub entity_group: String,
    /// Mean over the entity's words of the predicted tag's probability (first piece).
    pub score: f32,
    /// The text the entity covers.
    pub word: String,
    /// Character index of its first character.
    pub start: usize,
    /// Character index one past its last character.
    pub end: usize,
}

/// One text's prediction, by task.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// Single-label / pair classification: the probability of each label (label order).
    Classes(Vec<f32>),
    /// Multilabel: each label's sigmoid probability (label order) and whether it is at or
    /// over its threshold.
    Labels {
        /// Probability per label.
        probabilities: Vec<f32>,
        /// Label chosen (probability ≥ threshold) per label.
        chosen: Vec<bool>,
    },
    /// Regression: the predicted value.
    Value(f32),
    /// Token classification: the entities found.
    Entities(Vec<EntitySpan>),
    /// Embedding: the L2-normalised sentence vector (the model's trained pooling).
    Embedding(Vec<f32>),
}

impl Predictor {
    /// Predict encoded inputs ([`TextEncoder::encode`]) in batches of `batch_size` (length
    /// order inside); one [`Prediction`] per input, in input order.
    pub fn predict_encoded(
        &self,
        inputs: &[Encoded],
        batch_size: usize,
    ) -> Result<Vec<Prediction>> {
        let tokens: Vec<Tokens> = inputs.iter().map(|e| e.tokens.clone()).collect();
        let (pad, dev) = (self.tokenizer.pad_id(), &self.device);
        if self.task.kind.is_classification() {
            let (probs, _) = predict_probs(&self.model, &tokens, None, batch_size, pad, dev)?;
            return Ok(probs.into_iter().map(Prediction::Classes).collect());
        }
        let out = outputs(self.task.kind, &self.model, &tokens, batch_size, pad, dev)?;
        Ok(match out {
            Outputs::Probs(p, _) => p
                .into_iter()
                .map(|probabilities| {
                    let chosen = probabilities
                        .iter()
                        .zip(&self.task.thresholds)
                        .map(|(&p, &t)| f64::from(p) >= t)
                        .collect();
                    Prediction::Labels {
                        probabilities,
                        chosen,
                    }
                })
                .collect(),
            Outputs::Values(v) => v.into_iter().map(Prediction::Value).collect(),
            Outputs::Embeddings(v) => v.into_iter().map(Prediction::Embedding).collect(),
            Outputs::Pieces(pieces, logp) => inputs
                .iter()
                .zip(pieces.iter().zip(&logp))
                .map(|(e, (p, lp))| Ok(Prediction::Entities(self.entity_spans(e, p, lp)?)))
                .collect::<Result<_>>()?,
        })
    }

    /// Predict raw texts: [`TextEncoder::encode`] then [`Predictor::predict_encoded`].
    pub fn predict_texts(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Prediction>> {
        let encoded = self.text_encoder().encode(texts)?;
        self.predict_encoded(&encoded, batch_size)
    }

    /// Entities of one text from its per-piece tag predictions: each word's tag is its first
    /// piece's (as in training and `tunekit predict`), entities are seqeval's chunks of the
    /// word tags, spans are the words' character spans.
    fn entity_spans(&self, e: &Encoded, pieces: &[usize], logp: &[f32]) -> Result<Vec<EntitySpan>> {
        let n = e.words.len();
        let tag_ids = ner::word_predictions(&e.word_ids, pieces, n, 0);
        let c = self.labels.len().max(1);
        // Probability of each word's predicted tag (its first piece); 0 for cut-off words.
        let mut word_score = vec![0.0f32; n];
        let mut seen = vec![false; n];
        for (k, w) in e.word_ids.iter().enumerate() {
            if let Some(w) = w.map(|w| w as usize)
                && w < n
                && !seen[w]
            {
                seen[w] = true;
                let tag = pieces.get(k).copied().unwrap_or(0);
                word_score[w] = logp.get(k * c + tag).map_or(0.0, |v| v.exp());
            }
        }
        let tags: Vec<String> = tag_ids
            .iter()
            .map(|&id| self.labels.get(id).cloned().unwrap_or_else(|| "O".into()))
            .collect();
        ner::entities(std::slice::from_ref(&tags))
            .into_iter()
            .map(|(ty, a, b)| {
                let (Some(first), Some(last)) = (e.words.get(a), e.words.get(b)) else {
                    return Err(Error::Engine(format!(
                        "entity words {a}..={b} outside the text's {n} words"
                    )));
                };
                let word: String = e
                    .text
                    .chars()
                    .skip(first.start)
                    .take(last.end - first.start)
                    .collect();
                let score = word_score[a..=b].iter().sum::<f32>() / (b + 1 - a) as f32;
                Ok(EntitySpan {
                    entity_group: ty,
                    score,
                    word,
                    start: first.start,
                    end: last.end,
                })
            })
            .collect()
    }

    /// Sentence vectors of tokenised inputs as `/embed` and `tunekit embed` make them: the
    /// encoder's hidden states pooled with `pooling`, not normalised (the caller decides),
    /// in input order.
    pub fn embed_tokens(
        &self,
        tokens: &[Tokens],
        pooling: crate::embed::EmbedPooling,
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>> {
        crate::embed::embed_tokens(
            &self.model.encoder,
            tokens,
            pooling,
            false,
            batch_size,
            self.tokenizer.pad_id(),
            &self.device,
        )
    }
}
