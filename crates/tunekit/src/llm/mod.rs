//! Decoder language models: loading one with its tokenizer and chat template (a GGUF file, or a
//! transformers directory), and generating text. The network itself is
//! [`crate::model::llama`]; this module is what the `generate` command (and later serving and
//! causal-LM fine-tuning) talks to.

pub mod chat;
pub mod generate;
pub mod sft;
pub mod tokenizer;

use std::path::Path;

use burn::tensor::Device;
use tokenizers::Tokenizer;

pub use chat::{ChatTemplate, Message};
pub use generate::{Generation, GenerationConfig, StopReason};

use crate::error::{Error, Result};
use crate::model::llama::{self, Llama};

/// A decoder with its tokenizer, chat template and stop tokens.
#[derive(Debug)]
pub struct LanguageModel {
    /// The network.
    pub model: Llama,
    /// The tokenizer (ids as transformers' for the same files).
    pub tokenizer: Tokenizer,
    /// The chat template, when the model has one.
    pub chat_template: Option<ChatTemplate>,
    /// Token ids that end a completion (eos).
    pub eos_token_ids: Vec<u32>,
    /// Prepend bos to every prompt (`tokenizer.ggml.add_bos_token` / `add_bos_token`).
    pub add_bos: Option<u32>,
    /// The bos token's id, whether or not prompts get it.
    pub bos_token_id: Option<u32>,
}

/// `add_bos`, unless `text` starts with that token's text already.
pub fn bos_for(tokenizer: &Tokenizer, add_bos: Option<u32>, text: &str) -> Option<u32> {
    add_bos.filter(|&b| {
        let bos = tokenizer.id_to_token(b).unwrap_or_default();
        bos.is_empty() || !text.starts_with(&bos)
    })
}

/// Token ids of a prompt `text`: special tokens in the text matched, `add_bos` first unless
/// the text starts with it ([`bos_for`]). What generation and the fine-tuning evaluation use.
pub fn encode(tokenizer: &Tokenizer, add_bos: Option<u32>, text: &str) -> Result<Vec<u32>> {
    let enc = tokenizer
        .encode(text, false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut ids = Vec::with_capacity(enc.len() + 1);
    ids.extend(bos_for(tokenizer, add_bos, text));
    ids.extend_from_slice(enc.get_ids());
    Ok(ids)
}

fn token_text(tokenizer: &Tokenizer, id: Option<u32>) -> String {
    id.and_then(|i| tokenizer.id_to_token(i))
        .unwrap_or_default()
}

impl LanguageModel {
    /// Load `path`: a `.gguf` file, or a directory with `config.json`, weights and
    /// `tokenizer.json` (and optionally `tokenizer_config.json` with `chat_template`).
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        if path.is_file() {
            return Self::open_gguf(path, device);
        }
        if path.is_dir() {
            return Self::open_dir(path, device);
        }
        Err(Error::Model(format!(
            "{}: no such model file or directory",
            path.display()
        )))
    }

    /// Load a GGUF file (model, tokenizer and chat template from its metadata).
    pub fn open_gguf(path: &Path, device: &Device) -> Result<Self> {
        let (model, file) = llama::load_gguf(path, device)?;
        let tokenizer = tokenizer::tokenizer_from_gguf(&file)?;
        let id = |k: &str| {
            file.metadata
                .get(k)
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
        };
        let (bos, eos) = (
            id("tokenizer.ggml.bos_token_id"),
            id("tokenizer.ggml.eos_token_id"),
        );
        let add_bos = matches!(
            file.metadata.get("tokenizer.ggml.add_bos_token"),
            Some(crate::model::gguf::GgufValue::Bool(true))
        );
        let chat_template = match file.metadata.get("tokenizer.chat_template") {
            Some(v) => {
                let src = v.as_str().ok_or_else(|| {
                    Error::Model(format!(
                        "{}: tokenizer.chat_template is not a string",
                        path.display()
                    ))
                })?;
                Some(ChatTemplate::new(
                    src,
                    &token_text(&tokenizer, bos),
                    &token_text(&tokenizer, eos),
                )?)
            }
            None => None,
        };
        Ok(LanguageModel {
            model,
            tokenizer,
            chat_template,
            eos_token_ids: eos.into_iter().collect(),
            add_bos: bos.filter(|_| add_bos),
            bos_token_id: bos,
        })
    }

    /// Load a transformers directory.
    pub fn open_dir(dir: &Path, device: &Device) -> Result<Self> {
        let model = llama::load_hf_dir(dir, device)?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        // Padding or truncation baked into a tokenizer.json would silently pad or cut every
        // prompt and training segment: lengths are the caller's (model.max_length, counted).
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let read_json = |name: &str| -> Result<Option<serde_json::Value>> {
            let p = dir.join(name);
            if !p.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Model(format!("{}: {e}", p.display())))
        };
        let tc = read_json("tokenizer_config.json")?.unwrap_or_default();
        let gc = read_json("generation_config.json")?.unwrap_or_default();
        let tok_str = |k: &str| {
            tc.get(k)
                .and_then(|v| {
                    v.as_str()
                        .or_else(|| v.get("content").and_then(|c| c.as_str()))
                })
                .map(str::to_string)
        };
        let (bos, eos) = (tok_str("bos_token"), tok_str("eos_token"));
        let mut eos_ids: Vec<u32> = match gc.get("eos_token_id") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect(),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        if let Some(id) = eos
            .as_deref()
            .and_then(|t| tokenizer.token_to_id(t))
            .filter(|id| !eos_ids.contains(id))
        {
            eos_ids.push(id);
        }
        let chat_template = match tc.get("chat_template").and_then(|v| v.as_str()) {
            Some(src) => Some(ChatTemplate::new(
                src,
                bos.as_deref().unwrap_or_default(),
                eos.as_deref().unwrap_or_default(),
            )?),
            None => None,
        };
        let bos_token_id = bos.as_deref().and_then(|t| tokenizer.token_to_id(t));
        let add_bos = tc
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
            .then(|| bos.as_deref().and_then(|t| tokenizer.token_to_id(t)))
            .flatten();
        Ok(LanguageModel {
            model,
            tokenizer,
            chat_template,
            eos_token_ids: eos_ids,
            add_bos,
            bos_token_id,
        })
    }

    /// Token ids of `text` (special tokens in the text are matched; bos prepended when the
    /// model asks for it and the text does not already start with it, as a chat template
    /// writing `{{ bos_token }}` does).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        encode(&self.tokenizer, self.add_bos, text)
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The prompt for a user message: the chat template with the generation prompt when
    /// `chat` and the model has a template, else `text` as is.
    pub fn prompt(&self, text: &str, chat: bool) -> Result<String> {
        match (&self.chat_template, chat) {
            (Some(t), true) => t.render(&[Message::new("user", text)], true),
            _ => Ok(text.to_string()),
        }
    }

    /// Complete `prompt` (already templated) with `cfg`; the model's eos ids are added to
    /// the stop tokens.
    pub fn complete(&self, prompt: &str, cfg: &GenerationConfig) -> Result<Generation> {
        let ids = self.encode(prompt)?;
        let mut cfg = cfg.clone();
        for &e in &self.eos_token_ids {
            if !cfg.stop_tokens.contains(&e) {
                cfg.stop_tokens.push(e);
            }
        }
        generate::generate(&self.model, &ids, &cfg, &|ids| self.decode(ids))
    }
}
