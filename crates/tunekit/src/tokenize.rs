//! Tokenisation with the model's own `tokenizer.json` (the `tokenizers` crate), with
//! truncation counted per split instead of applied silently.

use std::path::Path;

use tokenizers::{
    EncodeInput, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};

/// One tokenised example, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids including special tokens.
    pub ids: Vec<u32>,
    /// Segment ids.
    pub type_ids: Vec<u32>,
    /// Whether `max_length` cut tokens off this example.
    pub truncated: bool,
}

/// A tokenizer configured for one maximum length.
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
    pad_id: u32,
}

impl TextTokenizer {
    /// Load `tokenizer.json`, truncating to `max_length` tokens (special tokens included).
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path).map_err(|e| {
            Error::Tokenizer(format!("{}: cannot load tokenizer: {e}", path.display()))
        })?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .or_else(|| inner.token_to_id("<pad>"))
            .unwrap_or(0);
        Ok(TextTokenizer {
            inner,
            max_length,
            pad_id,
        })
    }

    /// Maximum sequence length in tokens.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Id of the padding token.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Tokenise texts (with optional pairs) in parallel.
    pub fn encode_batch(&self, texts: &[&str], pairs: Option<&[&str]>) -> Result<Vec<Tokens>> {
        let inputs: Vec<EncodeInput> = match pairs {
            Some(p) => texts
                .iter()
                .zip(p.iter())
                .map(|(a, b)| EncodeInput::Dual((*a).into(), (*b).into()))
                .collect(),
            None => texts
                .iter()
                .map(|t| EncodeInput::Single((*t).into()))
                .collect(),
        };
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::Tokenizer(format!("tokenisation failed: {e}")))?;
        Ok(encodings
            .into_iter()
            .map(|e| Tokens {
                truncated: !e.get_overflowing().is_empty(),
                ids: e.get_ids().to_vec(),
                type_ids: e.get_type_ids().to_vec(),
            })
            .collect())
    }
}
