//! Tokenisation with the model's own `tokenizer.json` (the `tokenizers` crate), with
//! truncation counted per split instead of applied silently.

use std::path::Path;

use tokenizers::{
    EncodeInput, PostProcessor, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::error::{Error, Result};
use crate::model::BertConfig;

/// What [`TextTokenizer::token_counts`] counted over a set of texts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Full token count per text (special tokens included, no truncation).
    pub lengths: Vec<usize>,
    /// Word pieces over all texts, special tokens excluded.
    pub word_pieces: usize,
    /// Of those, pieces that are the unknown token (text the vocabulary cannot spell).
    pub unknown: usize,
}

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
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
    pad_id: u32,
    /// Rows of the model's token-type table (`type_vocab_size`), when known: segment ids at or
    /// past it are written as 0 ([`TextTokenizer::for_model`]).
    type_vocab_size: Option<u32>,
}

impl TextTokenizer {
    /// The tokenizer of a model, limited to what the model can take, so that every command
    /// that builds model inputs gets the same checks:
    ///
    /// - `max_length` must fit the position table (`max_position_embeddings` of `config`),
    ///   else an error naming both numbers (longer inputs are then truncated to `max_length`
    ///   and flagged in [`Tokens::truncated`], for the caller to count and report);
    /// - segment ids stay inside the token-type table: a model with one token type
    ///   (`type_vocab_size = 1`, RoBERTa-style configs) gets type id 0 everywhere, sentence
    ///   pairs included, as transformers' tokenizers for such models do;
    /// - every token id of the tokenizer's vocabulary must have a row in the word-embedding
    ///   table (`vocab_size`), else an error naming both (a tokenizer from another model).
    pub fn for_model(path: &Path, max_length: usize, config: &BertConfig) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        check_max_length(max_length, config, dir)?;
        let mut t = Self::from_file(path, max_length)?;
        if let Some((token, &id)) = t.inner.get_vocab(true).iter().max_by_key(|(_, id)| **id)
            && id as usize >= config.vocab_size
        {
            return Err(Error::Model(format!(
                "{}: token {token:?} has id {id}, but {} has vocab_size {} (word-embedding rows): the tokenizer does not belong to this model",
                path.display(),
                dir.join("config.json").display(),
                config.vocab_size
            )));
        }
        t.type_vocab_size = Some(u32::try_from(config.type_vocab_size).unwrap_or(u32::MAX));
        Ok(t)
    }

    /// Load `tokenizer.json`, truncating to `max_length` tokens (special tokens included),
    /// without a model's limits (see [`TextTokenizer::for_model`], which commands use).
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        if max_length == 0 {
            return Err(Error::Config(format!(
                "{}: max_length must be at least 1 token",
                path.display()
            )));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| {
            Error::Tokenizer(format!("{}: cannot load tokenizer: {e}", path.display()))
        })?;
        inner.with_padding(None);
        // The tokenizers crate computes `max_length - special tokens` unchecked (an underflow
        // that wraps in release builds and then truncates nothing), so a length that leaves no
        // room for a text pair's words is refused here.
        let special = inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(true));
        if max_length <= special {
            return Err(Error::Config(format!(
                "{}: max_length {max_length} leaves no room for text: the tokenizer adds {special} special tokens to a text pair; use a max length of at least {}",
                path.display(),
                special + 1
            )));
        }
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
            type_vocab_size: None,
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

    /// Full token counts (special tokens included, no truncation), for length statistics
    /// and for counting what `max_length` would cut.
    pub fn token_lengths(&self, texts: &[&str], pairs: Option<&[&str]>) -> Result<Vec<usize>> {
        Ok(self.token_counts(texts, pairs)?.lengths)
    }

    /// Id of the unknown token (`[UNK]`, `<unk>`), when the vocabulary has one.
    pub fn unk_id(&self) -> Option<u32> {
        self.inner
            .token_to_id("[UNK]")
            .or_else(|| self.inner.token_to_id("<unk>"))
    }

    /// [`TextTokenizer::token_lengths`] plus the word pieces (special tokens excluded) and
    /// how many of them are the unknown token, all from one pass over the texts.
    pub fn token_counts(&self, texts: &[&str], pairs: Option<&[&str]>) -> Result<TokenCounts> {
        let unk = self.unk_id();
        let mut full = self.inner.clone();
        full.with_truncation(None)
            .map_err(|e| Error::Tokenizer(format!("{e}")))?;
        // In chunks: full encodings (offsets, masks, words) are far bigger than the lengths
        // kept, so memory stays bounded by the chunk, not the dataset.
        const CHUNK: usize = 2048;
        let mut counts = TokenCounts {
            lengths: Vec::with_capacity(texts.len()),
            word_pieces: 0,
            unknown: 0,
        };
        for (i, chunk) in texts.chunks(CHUNK).enumerate() {
            let pairs = pairs.map(|p| &p[i * CHUNK..(i * CHUNK + chunk.len()).min(p.len())]);
            let encodings = full
                .encode_batch(encode_inputs(chunk, pairs), true)
                .map_err(|e| Error::Tokenizer(format!("tokenisation failed: {e}")))?;
            for e in &encodings {
                counts.lengths.push(e.get_ids().len());
                for (&id, &special) in e.get_ids().iter().zip(e.get_special_tokens_mask()) {
                    if special == 0 {
                        counts.word_pieces += 1;
                        counts.unknown += usize::from(Some(id) == unk);
                    }
                }
            }
        }
        Ok(counts)
    }

    /// Tokenise texts (with optional pairs) in parallel.
    pub fn encode_batch(&self, texts: &[&str], pairs: Option<&[&str]>) -> Result<Vec<Tokens>> {
        let inputs = encode_inputs(texts, pairs);
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::Tokenizer(format!("tokenisation failed: {e}")))?;
        Ok(encodings.iter().map(|e| self.tokens_of(e)).collect())
    }

    /// The pieces of one encoding (truncated when the tokenizer cut something off), segment
    /// ids limited to the model's token-type table.
    fn tokens_of(&self, e: &tokenizers::Encoding) -> Tokens {
        let type_ids = match self.type_vocab_size {
            Some(n) => e
                .get_type_ids()
                .iter()
                .map(|&t| if t < n { t } else { 0 })
                .collect(),
            None => e.get_type_ids().to_vec(),
        };
        Tokens {
            truncated: !e.get_overflowing().is_empty(),
            ids: e.get_ids().to_vec(),
            type_ids,
        }
    }
}

/// The kind of a `tokenizer.json`, in words: its model (`WordPiece`, `BPE`, `Unigram`,
/// `WordLevel`), BPE marked `byte-level` when its pre-tokenizer is byte-level (GPT-2 /
/// RoBERTa style), Unigram marked `(SentencePiece)`.
pub fn tokenizer_kind(path: &Path) -> Result<String> {
    let json: serde_json::Value = crate::fsutil::read_json(path)?;
    let model = json["model"]["type"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    let byte_level = json["pre_tokenizer"].to_string().contains("\"ByteLevel\"");
    Ok(match model.as_str() {
        "BPE" if byte_level => "byte-level BPE".into(),
        "Unigram" => "Unigram (SentencePiece)".into(),
        _ => model,
    })
}

/// `max_length` checked against the model's position table: an input longer than
/// `max_position_embeddings` has no position embedding. The error names both numbers.
pub fn check_max_length(max_length: usize, config: &BertConfig, model_dir: &Path) -> Result<()> {
    if max_length == 0 {
        return Err(Error::Config("max_length must be at least 1 token".into()));
    }
    let longest = config.max_sequence_length();
    if max_length > longest {
        let offset = if longest == config.max_position_embeddings {
            String::new()
        } else {
            format!(
                ", less the {} positions before padding_idx + 1",
                config.max_position_embeddings - longest
            )
        };
        return Err(Error::Config(format!(
            "max_length {max_length} exceeds the model's position limit: {} has max_position_embeddings {}{offset} (the longest input it can take); use a max length of at most {longest}",
            model_dir.join("config.json").display(),
            config.max_position_embeddings,
        )));
    }
    Ok(())
}

/// Word pieces of pre-split words, with the word each piece came from (`None` for special
/// tokens): what token classification aligns its per-word tags to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordTokens {
    /// The pieces, as for any text.
    pub tokens: Tokens,
    /// Word index of each piece.
    pub word_ids: Vec<Option<u32>>,
}

impl TextTokenizer {
    /// Encode sentences given as words (CoNLL tokens), keeping each piece's word index.
    /// Truncation to `max_length` drops trailing words; `tokens.truncated` says so.
    pub fn encode_words(&self, sentences: &[Vec<String>]) -> Result<Vec<WordTokens>> {
        let inputs: Vec<EncodeInput> = sentences
            .iter()
            .map(|words| EncodeInput::Single(words.as_slice().into()))
            .collect();
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::Tokenizer(format!("tokenisation failed: {e}")))?;
        Ok(encodings
            .into_iter()
            .map(|e| WordTokens {
                word_ids: e.get_word_ids().to_vec(),
                tokens: self.tokens_of(&e),
            })
            .collect())
    }
}

/// A word of a raw text as the tokenizer's pre-tokenizer splits it (BERT: whitespace and
/// punctuation), with its span in the text in characters (Unicode scalar values, Python's
/// string indices: what the Hugging Face Inference API's `start` / `end` count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordSpan {
    /// The word as it appears in the text.
    pub word: String,
    /// Character index of its first character.
    pub start: usize,
    /// Character index one past its last character.
    pub end: usize,
}

impl TextTokenizer {
    /// Split `text` into words the way the tokenizer's pre-tokenizer does (whitespace when it
    /// has none), keeping each word's character span: how raw text becomes the words a token
    /// classifier tags ([`TextTokenizer::encode_words`]).
    pub fn words_with_offsets(&self, text: &str) -> Result<Vec<WordSpan>> {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let mut pts = PreTokenizedString::from(text);
        match self.inner.get_pre_tokenizer() {
            Some(p) => p
                .pre_tokenize(&mut pts)
                .map_err(|e| Error::Tokenizer(format!("pre-tokenisation failed: {e}")))?,
            None => tokenizers::pre_tokenizers::whitespace::WhitespaceSplit
                .pre_tokenize(&mut pts)
                .map_err(|e| Error::Tokenizer(format!("pre-tokenisation failed: {e}")))?,
        }
        let mut out = Vec::new();
        for (_, (a, b), _) in pts.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            let Some(word) = text.get(a..b) else {
                return Err(Error::Tokenizer(format!(
                    "pre-tokenisation gave the span {a}..{b}, not on character boundaries"
                )));
            };
            if word.trim().is_empty() {
                continue;
            }
            let start = text.get(..a).map_or(0, |p| p.chars().count());
            out.push(WordSpan {
                word: word.to_string(),
                start,
                end: start + word.chars().count(),
            });
        }
        Ok(out)
    }
}

fn encode_inputs<'a>(texts: &[&'a str], pairs: Option<&[&'a str]>) -> Vec<EncodeInput<'a>> {
    match pairs {
        Some(p) => texts
            .iter()
            .zip(p.iter())
            .map(|(a, b)| EncodeInput::Dual((*a).into(), (*b).into()))
            .collect(),
        None => texts
            .iter()
            .map(|t| EncodeInput::Single((*t).into()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm() -> TextTokenizer {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets/models/all-MiniLM-L6-v2/tokenizer.json");
        TextTokenizer::from_file(&p, 16).expect("assets missing: run scripts/fetch-assets.sh")
    }

    fn minilm_config() -> BertConfig {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets/models/all-MiniLM-L6-v2/config.json");
        BertConfig::from_file(&p).expect("assets missing: run scripts/fetch-assets.sh")
    }

    fn minilm_tokenizer_path() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets/models/all-MiniLM-L6-v2/tokenizer.json")
    }

    #[test]
    fn length_beyond_the_position_table_is_refused_naming_both_numbers() {
        let config = minilm_config();
        let err = TextTokenizer::for_model(&minilm_tokenizer_path(), 1024, &config)
            .err()
            .expect("1024 > 512 must be refused")
            .to_string();
        assert!(
            err.contains("max_length 1024") && err.contains("max_position_embeddings 512"),
            "{err}"
        );
        assert!(TextTokenizer::for_model(&minilm_tokenizer_path(), 0, &config).is_err());
        let t = TextTokenizer::for_model(&minilm_tokenizer_path(), 512, &config).unwrap();
        let long = "word ".repeat(600);
        let out = t.encode_batch(&[long.as_str()], None).unwrap();
        assert_eq!(out[0].ids.len(), 512);
        assert!(out[0].truncated);
    }

    #[test]
    fn pairs_on_a_one_row_token_type_table_get_type_id_zero() {
        let mut config = minilm_config();
        let two = TextTokenizer::for_model(&minilm_tokenizer_path(), 16, &config).unwrap();
        let pair = two.encode_batch(&["a cat"], Some(&["a dog"])).unwrap();
        assert_eq!(pair[0].type_ids, vec![0, 0, 0, 0, 1, 1, 1]);
        config.type_vocab_size = 1;
        let one = TextTokenizer::for_model(&minilm_tokenizer_path(), 16, &config).unwrap();
        let pair = one.encode_batch(&["a cat"], Some(&["a dog"])).unwrap();
        assert_eq!(pair[0].type_ids, vec![0; 7]);
        // The same pieces otherwise.
        assert_eq!(
            pair[0].ids,
            two.encode_batch(&["a cat"], Some(&["a dog"])).unwrap()[0].ids
        );
    }

    #[test]
    fn token_ids_past_the_word_embedding_table_are_refused() {
        let mut config = minilm_config();
        config.vocab_size = 1000;
        let err = TextTokenizer::for_model(&minilm_tokenizer_path(), 16, &config)
            .err()
            .expect("a 30522-token vocabulary on 1000 rows must be refused")
            .to_string();
        assert!(err.contains("vocab_size 1000"), "{err}");
    }

    #[test]
    fn pairs_get_segment_ids_and_special_tokens() {
        let t = minilm();
        let out = t.encode_batch(&["a cat"], Some(&["a dog"])).unwrap();
        let e = &out[0];
        // [CLS] a cat [SEP] a dog [SEP]
        assert_eq!(e.ids.len(), 7);
        assert_eq!(e.type_ids, vec![0, 0, 0, 0, 1, 1, 1]);
        assert_eq!((e.ids[0], e.ids[3], e.ids[6]), (101, 102, 102));
        assert!(!e.truncated);
    }

    #[test]
    fn truncation_keeps_the_final_separator_and_is_flagged() {
        let t = minilm();
        let long = "word ".repeat(40);
        let out = t.encode_batch(&[long.as_str(), "short"], None).unwrap();
        assert_eq!(out[0].ids.len(), 16);
        assert_eq!(*out[0].ids.last().unwrap(), 102);
        assert!(out[0].truncated);
        assert!(!out[1].truncated);
        assert_eq!(t.pad_id(), 0);
    }

    #[test]
    fn token_lengths_are_untruncated_and_chunking_keeps_pairs_aligned() {
        let t = minilm();
        let texts: Vec<String> = (0..5000).map(|i| "word ".repeat(1 + i % 40)).collect();
        let pairs: Vec<String> = (0..5000).map(|i| "x ".repeat(1 + i % 3)).collect();
        let tr: Vec<&str> = texts.iter().map(String::as_str).collect();
        let pr: Vec<&str> = pairs.iter().map(String::as_str).collect();
        let lengths = t.token_lengths(&tr, Some(&pr)).unwrap();
        for (i, &l) in lengths.iter().enumerate() {
            // [CLS] words [SEP] pair [SEP], beyond max_length 16.
            assert_eq!(l, 3 + (1 + i % 40) + (1 + i % 3), "row {i}");
        }
        assert!(lengths.iter().any(|&l| l > t.max_length()));
    }

    #[test]
    fn unknown_word_pieces_are_counted_without_special_tokens() {
        let t = minilm();
        // Ethiopic is not in MiniLM's (BERT uncased) vocabulary: one [UNK] per word.
        let c = t.token_counts(&["hello world", "ሰላም ለዓለም"], None).unwrap();
        assert_eq!(c.lengths, vec![4, 4]);
        assert_eq!((c.word_pieces, c.unknown), (4, 2));
        assert!(t.unk_id().is_some());
    }
}
