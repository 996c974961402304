//! Supervised fine-tuning data for decoders: JSONL records with chat `messages` or
//! `prompt` / `completion` fields, rendered with the model's chat template, tokenised, and
//! marked with the tokens the loss is computed on.
//!
//! Which tokens train (TRL's `SFTTrainer` conventions):
//! - `messages`: with `completion_only_loss` (default), the assistant turns only — for each
//!   assistant message the text its turn adds to the conversation (its content and the
//!   template's end-of-turn, e.g. `…<|im_end|>\n`), found by rendering the conversation up to
//!   it with the generation prompt and then including it; everything else is context.
//! - `prompt` / `completion`: with a chat template, a user turn and an assistant turn (as
//!   above); without one (`task.chat_template = false` or a model that has none), the two
//!   texts concatenated and the model's eos appended, the loss on the completion and eos.
//! - `completion_only_loss = false`: every token but the first.
//!
//! Every segment is tokenised on its own (special tokens in the text are matched), bos first
//! when the model asks for it. Examples longer than `model.max_length` are cut at the end and
//! counted; an example left with no trained token is dropped and counted. Nothing is silent:
//! the counts are in [`SftStats`], logged and written to `data_report.json`.

use std::io::BufRead;
use std::path::Path;

use serde::Serialize;

use super::chat::{ChatTemplate, Message};
use crate::error::{Error, Result};

/// One record of an SFT file.
#[derive(Debug, Clone, PartialEq)]
pub enum SftRecord {
    /// A conversation (`{"messages": [{"role": …, "content": …}, …]}`).
    Messages(Vec<Message>),
    /// `{"prompt": …, "completion": …}`.
    PromptCompletion {
        /// The context.
        prompt: String,
        /// What the model learns to answer.
        completion: String,
    },
}

impl SftRecord {
    /// The prompt messages and the reference answer of a record used for generation-based
    /// evaluation: everything before the last assistant message, and that message.
    pub fn prompt_and_answer(&self) -> Option<(Vec<Message>, String)> {
        match self {
            SftRecord::PromptCompletion { prompt, completion } => {
                Some((vec![Message::new("user", prompt)], completion.clone()))
            }
            SftRecord::Messages(m) => {
                let last = m.iter().rposition(|x| x.role == "assistant")?;
                Some((m[..last].to_vec(), m[last].content.clone()))
            }
        }
    }
}

/// Read every record of a JSONL file, or stop at the first bad line with its number.
///
/// # Errors
/// As [`read_jsonl_lines`].
pub fn read_jsonl(path: &Path) -> Result<Vec<SftRecord>> {
    Ok(read_jsonl_lines(path)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Every record of a JSONL file with its 1-based line number, or the first bad line's error.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened; [`Error::Input`] naming the file and line for
/// a line that cannot be read (invalid UTF-8, an I/O error mid-file) or is not a JSON object
/// with either
/// a `messages` array of `{role, content}` strings or string `prompt` and `completion`
/// fields, and for an empty file.
pub fn read_jsonl_lines(path: &Path) -> Result<Vec<(usize, SftRecord)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        let line = line.map_err(|e| Error::Input(format!("{}: {e}", at())))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| Error::Input(format!("{}: not JSON: {e}", at())))?;
        out.push((
            i + 1,
            parse_record(&v).map_err(|why| Error::Input(format!("{}: {why}", at())))?,
        ));
    }
    if out.is_empty() {
        return Err(Error::Input(format!(
            "{}: no records (expected JSON lines with `messages` or `prompt`/`completion`)",
            path.display()
        )));
    }
    Ok(out)
}

fn parse_record(v: &serde_json::Value) -> std::result::Result<SftRecord, String> {
    let obj = v
        .as_object()
        .ok_or("a record must be a JSON object".to_string())?;
    if let Some(m) = obj.get("messages") {
        if obj.contains_key("prompt") || obj.contains_key("completion") {
            return Err("a record has either `messages` or `prompt`/`completion`, not both".into());
        }
        let list = m.as_array().ok_or("`messages` must be an array")?;
        let mut messages = Vec::with_capacity(list.len());
        for (k, item) in list.iter().enumerate() {
            let field = |name: &str| {
                item.get(name).and_then(|x| x.as_str()).ok_or(format!(
                    "messages[{k}] needs a string `{name}` (got {item})"
                ))
            };
            messages.push(Message::new(field("role")?, field("content")?));
        }
        if !messages.iter().any(|m| m.role == "assistant") {
            return Err("`messages` has no assistant message to learn".into());
        }
        return Ok(SftRecord::Messages(messages));
    }
    let text = |name: &str| match obj.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("`{name}` must be a string, got {other}")),
        None => Err(format!(
            "missing `{name}` (a record needs `messages`, or `prompt` and `completion`)"
        )),
    };
    Ok(SftRecord::PromptCompletion {
        prompt: text("prompt")?,
        completion: text("completion")?,
    })
}

/// A tokenised example: ids and, per position, whether that token is a target of the loss
/// (predicted from the positions before it).
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    /// Token ids, bos first when the model uses one.
    pub ids: Vec<u32>,
    /// `target[t]`: the loss includes predicting `ids[t]` from `ids[..t]` (never `t = 0`).
    pub target: Vec<bool>,
    /// Whether the example was cut at `max_length`.
    pub truncated: bool,
}

impl SftExample {
    /// Number of target tokens.
    pub fn targets(&self) -> usize {
        self.target.iter().filter(|&&t| t).count()
    }
}

/// What tokenising a split did (`data_report.json` → `sft`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SftStats {
    /// Records read.
    pub records: usize,
    /// Examples kept.
    pub examples: usize,
    /// Records cut at `model.max_length` (those then dropped included).
    pub truncated: usize,
    /// Examples dropped because no target token was left after the cut.
    pub dropped_no_target: usize,
    /// Tokens of the kept examples.
    pub tokens: usize,
    /// Target (loss) tokens of the kept examples.
    pub target_tokens: usize,
}

/// How records become token ids.
pub struct SftEncoder<'a> {
    /// The tokenizer.
    pub tokenizer: &'a tokenizers::Tokenizer,
    /// The chat template, when records are rendered with one.
    pub template: Option<&'a ChatTemplate>,
    /// Prepended to every example.
    pub bos: Option<u32>,
    /// Appended after a completion without a chat template.
    pub eos: Option<u32>,
    /// Loss on completions / assistant turns only (else on every token).
    pub completion_only_loss: bool,
    /// Longest example in tokens.
    pub max_length: usize,
}

impl SftEncoder<'_> {
    fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// The record as (text, trained) segments.
    fn segments(&self, record: &SftRecord) -> Result<Vec<(String, bool)>> {
        let messages = match (record, self.template) {
            (SftRecord::PromptCompletion { prompt, completion }, None) => {
                return Ok(vec![(prompt.clone(), false), (completion.clone(), true)]);
            }
            (SftRecord::Messages(_), None) => {
                return Err(Error::Config(
                    "`messages` records need a chat template: the model has none or task.chat_template = false (use prompt/completion records)".into(),
                ));
            }
            (SftRecord::PromptCompletion { prompt, completion }, Some(_)) => vec![
                Message::new("user", prompt),
                Message::new("assistant", completion),
            ],
            (SftRecord::Messages(m), Some(_)) => m.clone(),
        };
        let Some(t) = self.template else {
            return Ok(Vec::new());
        };
        if !self.completion_only_loss {
            // Every token trains: the conversation is one segment, rendered once.
            return Ok(vec![(t.render(&messages, false)?, true)]);
        }
        let mut segments = Vec::new();
        let mut done = 0usize;
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let before = t.render(&messages[..i], true)?;
            let with = t.render(&messages[..=i], false)?;
            let (Some(context), Some(answer)) = (before.get(done..), with.get(before.len()..))
            else {
                return Err(prefix_error(i));
            };
            if !with.starts_with(&before) || !before.starts_with(&with_prefix(&segments)) {
                return Err(prefix_error(i));
            }
            segments.push((context.to_string(), false));
            segments.push((answer.to_string(), true));
            done = with.len();
        }
        let full = t.render(&messages, false)?;
        match full.get(done..) {
            Some(rest) if full.starts_with(&with_prefix(&segments)) => {
                if !rest.is_empty() {
                    segments.push((rest.to_string(), false));
                }
            }
            _ => return Err(prefix_error(messages.len())),
        }
        Ok(segments)
    }

    /// Token ids and target marks of `record`.
    ///
    /// # Errors
    /// Template or tokenizer errors; a chat template that does not render a conversation as
    /// the extension of its beginning (its assistant turns cannot be found).
    pub fn encode(&self, record: &SftRecord) -> Result<SftExample> {
        let segments = self.segments(record)?;
        // A template that writes `{{ bos_token }}` itself gets no second one (as
        // `apply_chat_template(tokenize=True)`, which adds no special tokens).
        let first = segments.first().map_or("", |(s, _)| s.as_str());
        let bos = super::bos_for(self.tokenizer, self.bos, first);
        let mut ids: Vec<u32> = bos.into_iter().collect();
        let mut target = vec![false; ids.len()];
        for (text, trained) in segments {
            let t = self.tokens(&text)?;
            target.extend(std::iter::repeat_n(trained, t.len()));
            ids.extend(t);
        }
        if self.template.is_none()
            && matches!(record, SftRecord::PromptCompletion { .. })
            && let Some(eos) = self.eos
        {
            ids.push(eos);
            target.push(true);
        }
        if !self.completion_only_loss {
            target.iter_mut().for_each(|t| *t = true);
        }
        if let Some(first) = target.first_mut() {
            *first = false;
        }
        let truncated = ids.len() > self.max_length;
        ids.truncate(self.max_length);
        target.truncate(self.max_length);
        Ok(SftExample {
            ids,
            target,
            truncated,
        })
    }

    /// Encode every record of `path` (with its line number, [`read_jsonl_lines`]); examples
    /// without a target token after truncation are dropped. Returns the kept examples, the
    /// index of each kept example's record, and the counts.
    ///
    /// # Errors
    /// [`SftEncoder::encode`]'s, prefixed with the record's file and line.
    pub fn encode_all(
        &self,
        path: &Path,
        records: &[(usize, SftRecord)],
    ) -> Result<(Vec<SftExample>, Vec<usize>, SftStats)> {
        let mut stats = SftStats {
            records: records.len(),
            ..Default::default()
        };
        let mut out = Vec::with_capacity(records.len());
        let mut kept = Vec::with_capacity(records.len());
        for (i, (line, r)) in records.iter().enumerate() {
            let e = self
                .encode(r)
                .map_err(|e| Error::Input(format!("{}:{line}: {e}", path.display())))?;
            stats.truncated += usize::from(e.truncated);
            if e.targets() == 0 {
                stats.dropped_no_target += 1;
                continue;
            }
            stats.tokens += e.ids.len();
            stats.target_tokens += e.targets();
            out.push(e);
            kept.push(i);
        }
        stats.examples = out.len();
        Ok((out, kept, stats))
    }
}

fn with_prefix(segments: &[(String, bool)]) -> String {
    segments.iter().map(|(s, _)| s.as_str()).collect()
}

fn prefix_error(at: usize) -> Error {
    Error::Input(format!(
        "the chat template does not render the conversation up to message {at} as the beginning of the whole (the assistant turns cannot be told apart); set task.completion_only_loss = false"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2's template (ChatML with a default system message).
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// A word-level tokenizer over a fixed vocabulary with ChatML's special tokens.
    fn tokenizer() -> tokenizers::Tokenizer {
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 0, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "unk_token": "[UNK]", "vocab": {
                "<|im_start|>": 0, "<|im_end|>": 1, "[UNK]": 2, "system": 3, "user": 4,
                "assistant": 5, "hi": 6, "hello": 7, "bye": 8, "ok": 9, "You": 10
            }}
        });
        tokenizers::Tokenizer::from_bytes(json.to_string()).unwrap()
    }

    fn encoder<'a>(
        tok: &'a tokenizers::Tokenizer,
        template: Option<&'a ChatTemplate>,
        max_length: usize,
    ) -> SftEncoder<'a> {
        SftEncoder {
            tokenizer: tok,
            template,
            bos: None,
            eos: Some(1),
            completion_only_loss: true,
            max_length,
        }
    }

    fn trained_ids(e: &SftExample) -> Vec<u32> {
        e.ids
            .iter()
            .zip(&e.target)
            .filter(|(_, t)| **t)
            .map(|(i, _)| *i)
            .collect()
    }

    #[test]
    fn only_assistant_turns_train_in_a_conversation() {
        let tok = tokenizer();
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let enc = encoder(&tok, Some(&t), 512);
        let r = SftRecord::Messages(vec![
            Message::new("user", "hi"),
            Message::new("assistant", "hello"),
            Message::new("user", "bye"),
            Message::new("assistant", "ok"),
        ]);
        let e = enc.encode(&r).unwrap();
        // The answer, its <|im_end|> (1) and the trailing newline (no token here) train.
        assert_eq!(trained_ids(&e), vec![7, 1, 9, 1]);
        assert!(!e.truncated);
        let all = SftEncoder {
            completion_only_loss: false,
            ..encoder(&tok, Some(&t), 512)
        };
        let e2 = all.encode(&r).unwrap();
        assert_eq!(e2.ids, e.ids);
        assert_eq!(e2.targets(), e.ids.len() - 1);
    }

    #[test]
    fn a_template_that_is_not_prefix_stable_is_named_and_trains_whole_without_completion_only() {
        // Renders only the last message: the conversation up to a turn is not a prefix.
        let last = "{{ messages[-1]['role'] }} {{ messages[-1]['content'] }}";
        let tok = tokenizer();
        let t = ChatTemplate::new(last, "", "").unwrap();
        let r = SftRecord::Messages(vec![
            Message::new("user", "hi"),
            Message::new("assistant", "hello"),
        ]);
        let e = encoder(&tok, Some(&t), 512)
            .encode_all(Path::new("chat.jsonl"), &[(7, r.clone())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("chat.jsonl:7") && e.contains("completion_only_loss"),
            "{e}"
        );
        let all = SftEncoder {
            completion_only_loss: false,
            ..encoder(&tok, Some(&t), 512)
        };
        let ex = all.encode(&r).unwrap();
        assert_eq!(ex.ids, vec![5, 7]);
        assert_eq!(ex.target, vec![false, true]);
    }

    #[test]
    fn bos_is_not_doubled_when_the_template_writes_it() {
        let tok = tokenizer();
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}{{ m['content'] }} {% endfor %}",
            "<|im_start|>",
            "",
        )
        .unwrap();
        let enc = SftEncoder {
            bos: Some(0),
            ..encoder(&tok, Some(&t), 512)
        };
        let r = SftRecord::PromptCompletion {
            prompt: "hi".into(),
            completion: "ok".into(),
        };
        let e = enc.encode(&r).unwrap();
        assert_eq!(e.ids.iter().filter(|&&i| i == 0).count(), 1, "{:?}", e.ids);
        let plain = SftEncoder {
            bos: Some(0),
            ..encoder(&tok, None, 512)
        };
        assert_eq!(plain.encode(&r).unwrap().ids, vec![0, 6, 9, 1]);
    }

    #[test]
    fn prompt_completion_without_template_appends_eos_and_trains_the_completion() {
        let tok = tokenizer();
        let enc = encoder(&tok, None, 512);
        let r = SftRecord::PromptCompletion {
            prompt: "hi".into(),
            completion: "hello".into(),
        };
        let e = enc.encode(&r).unwrap();
        assert_eq!(e.ids, vec![6, 7, 1]);
        assert_eq!(e.target, vec![false, true, true]);
    }

    #[test]
    fn truncation_is_counted_and_examples_without_targets_are_dropped_and_counted() {
        let tok = tokenizer();
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let long = SftRecord::PromptCompletion {
            prompt: "hi hi hi hi hi hi".into(),
            completion: "hello".into(),
        };
        let short = SftRecord::PromptCompletion {
            prompt: "hi".into(),
            completion: "ok".into(),
        };
        // Cut at the short example's length: the long one's answer starts after it.
        let wide = encoder(&tok, Some(&t), 512);
        let n_short = wide.encode(&short).unwrap().ids.len();
        let long_full = wide.encode(&long).unwrap();
        let first_target = long_full.target.iter().position(|&t| t).unwrap();
        assert!(n_short <= first_target, "{n_short} {first_target}");
        let enc = encoder(&tok, Some(&t), n_short);
        let (examples, kept, stats) = enc
            .encode_all(Path::new("x.jsonl"), &[(1, long), (2, short)])
            .unwrap();
        assert_eq!(stats.records, 2);
        assert_eq!(stats.truncated, 1);
        assert_eq!(stats.dropped_no_target, 1);
        assert_eq!(kept, vec![1]);
        assert_eq!(examples.len(), 1);
        assert!(examples[0].ids.len() <= 24);
        assert_eq!(stats.target_tokens, examples[0].targets());
    }

    #[test]
    fn reader_names_the_bad_line_and_accepts_both_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sft.jsonl");
        std::fs::write(
            &p,
            "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n",
        )
        .unwrap();
        let r = read_jsonl(&p).unwrap();
        assert_eq!(r.len(), 2);
        assert!(matches!(r[1], SftRecord::Messages(ref m) if m.len() == 2));
        for (body, needle) in [
            ("{\"prompt\": \"a\"}\n", ":1: missing `completion`"),
            (
                "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"messages\": [{\"role\": \"user\"}]}\n",
                ":2: messages[0] needs a string `content`",
            ),
            (
                "{\"prompt\": \"a\", \"completion\": 3}\n",
                "`completion` must be a string",
            ),
            (
                "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n",
                "no assistant message",
            ),
            ("not json\n", ":1: not JSON"),
            ("\n", "no records"),
        ] {
            std::fs::write(&p, body).unwrap();
            let e = read_jsonl(&p).unwrap_err().to_string();
            assert!(e.contains(needle), "{body:?}: {e}");
        }
    }
}
