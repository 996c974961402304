//! The tokenizer a GGUF file describes in its metadata (`tokenizer.ggml.*`), built as a
//! `tokenizers::Tokenizer` the way transformers builds it for `AutoTokenizer(gguf_file=)`
//! (`integrations/gguf/gguf_tokenizer_mapping.py`): for `tokenizer.ggml.model = gpt2`, a
//! byte-level BPE over `tokens` and `merges` (tokens not spelled in the byte alphabet are
//! respelled byte by byte); tokens typed CONTROL (3) added as special tokens and USER_DEFINED
//! (4) as plain added tokens; the split regex chosen by `tokenizer.ggml.pre` (GPT-2's when the
//! name is not one with its own).

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::model::gguf::GgufFile;

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the others to U+0100 on.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\u{fffd}');
    }
    table
}

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex of a `tokenizer.ggml.pre` name (transformers' `GGUF_PRE_TOKENIZER_SPLITS`);
/// `None`: GPT-2's byte-level regex.
pub fn split_regex(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// The `tokenizer.json` value of a GGUF file's byte-level BPE tokenizer.
pub fn tokenizer_json(f: &GgufFile) -> Result<Value> {
    let model = f.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::Tokenizer(format!(
            "{}: tokenizer.ggml.model `{model}` is not supported (gpt2, i.e. byte-level BPE)",
            f.path().display()
        )));
    }
    let tokens = f.get_strings("tokenizer.ggml.tokens")?;
    let merges = f.get_strings("tokenizer.ggml.merges")?;
    let types: Vec<i64> = match f.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .as_array()
            .map(|a| a.iter().map(|x| x.as_i64().unwrap_or(1)).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let spelling = bytes_to_unicode();
    let in_alphabet = |t: &str| t.chars().all(|c| spelling.contains(&c));
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        let key = if in_alphabet(t) {
            (*t).to_string()
        } else {
            t.bytes().map(|b| spelling[b as usize]).collect()
        };
        vocab.insert(key, json!(id));
    }
    let mut merge_pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            Error::Tokenizer(format!(
                "{}: tokenizer.ggml.merges[{i}] `{m}` is not two tokens separated by a space",
                f.path().display()
            ))
        })?;
        merge_pairs.push(json!([a, b]));
    }
    let added = |id: usize, content: &str, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": special})
    };
    let mut added_tokens = Vec::new();
    for (id, (t, ty)) in tokens.iter().zip(types.iter()).enumerate() {
        if *ty == 3 && in_alphabet(t) {
            added_tokens.push(added(id, t, true));
        }
    }
    for (id, (t, ty)) in tokens.iter().zip(types.iter()).enumerate() {
        if *ty == 4 && vocab.contains_key(*t) {
            added_tokens.push(added(id, t, false));
        }
    }
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre = f
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let pre_tokenizer = match split_regex(pre) {
        Some(re) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            byte_level(false)
        ]}),
        None => byte_level(true),
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merge_pairs}
    }))
}

/// The GGUF file's tokenizer (see the module docs).
pub fn tokenizer_from_gguf(f: &GgufFile) -> Result<Tokenizer> {
    let json = tokenizer_json(f)?;
    let text = serde_json::to_string(&json).map_err(|e| Error::Tokenizer(e.to_string()))?;
    text.parse::<Tokenizer>().map_err(|e| {
        Error::Tokenizer(format!(
            "{}: tokenizer from GGUF metadata: {e}",
            f.path().display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let t = bytes_to_unicode();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        let mut all: Vec<char> = t.to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 256);
    }
}
