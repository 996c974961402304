//! `causal_lm`: supervised fine-tuning of a decoder language model on the one training loop.
//!
//! The objective reads SFT records ([`crate::llm::sft`]), trains a llama-style decoder
//! ([`crate::model::llama`]) with full fine-tuning or LoRA ([`crate::model::llama::lora`]) on
//! the next-token cross-entropy of the target tokens, and validates with the mean loss per
//! target token, its perplexity and next-token accuracy. The loss of a micro-batch is summed
//! over its target tokens and an accumulation group is divided by its target-token count, so
//! accumulated micro-batches equal one large batch (as transformers' trainer does with
//! `num_items_in_batch` since 4.46).
//!
//! What the run leaves in `model/`: for LoRA, PEFT's adapter files (load with
//! `tunekit generate --model BASE --adapter DIR` or `peft.PeftModel.from_pretrained`); for full
//! fine-tuning, a transformers directory (`config.json`, `model.safetensors`, the tokenizer
//! with its chat template) that `tunekit generate --model DIR` and transformers load.

use std::path::{Path, PathBuf};

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::{Scores, TaskKind};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::fsutil::{write_atomic, write_json};
use crate::llm::sft::{SftEncoder, SftExample, SftRecord, SftStats, read_jsonl_lines};
use crate::llm::{ChatTemplate, LanguageModel};
use crate::model::llama::{self, KvCache, Llama, LlamaConfig};
use crate::model::lora::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use crate::model::weights::{WeightFile, to_vec, write_safetensors};
use crate::train::RunMetrics;
use crate::train::fit::{Built, Finished, Objective, Validation};
use crate::train::model::TrainModel;

impl TrainModel for Llama {
    fn save_weights(&self, dir: &Path, lora: bool) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if lora {
            write_safetensors(
                llama::lora::adapter_tensors(self)?,
                &dir.join(ADAPTER_WEIGHTS),
            )
        } else {
            write_safetensors(
                llama::lora::merged_tensors(self)?,
                &dir.join("model.safetensors"),
            )
        }
    }
}

/// One tokenised split.
struct Split {
    name: &'static str,
    examples: Vec<SftExample>,
    /// Every record of the file (generation-based evaluation answers each).
    records: Vec<SftRecord>,
}

/// The causal-LM objective (see the module docs).
pub(crate) struct CausalLm {
    config: RunConfig,
    /// The base model's path (`.gguf` file or directory).
    base: PathBuf,
    /// The pretrained network until [`Objective::build`] takes it.
    network: Option<Llama>,
    /// The network's hyperparameters.
    llama_config: LlamaConfig,
    /// Whether the network has its own `lm_head` (else it is tied to the embeddings).
    has_lm_head: bool,
    tokenizer: tokenizers::Tokenizer,
    chat_template: Option<ChatTemplate>,
    eos_token_ids: Vec<u32>,
    add_bos: Option<u32>,
    bos_token_id: Option<u32>,
    train: Split,
    validation: Option<Split>,
    test: Option<Split>,
    /// Tokenisation counts per split (`data_report.json`).
    stats: Vec<(&'static str, SftStats)>,
}

impl CausalLm {
    /// Load the base model (on the autodiff version of `device`) and tokenise the splits.
    ///
    /// # Errors
    /// A model that does not load, unreadable or malformed data (file and line named).
    pub(crate) fn prepare(config: &RunConfig, run_dir: &Path, device: &Device) -> Result<Self> {
        let base = PathBuf::from(&config.model.path);
        let ad = device.clone().autodiff();
        let lm = LanguageModel::open(&base, &ad)?;
        if config.model.max_length > lm.model.config.max_position_embeddings {
            return Err(Error::Config(format!(
                "model.max_length = {} exceeds the model's context of {} positions",
                config.model.max_length, lm.model.config.max_position_embeddings
            )));
        }
        let template = lm
            .chat_template
            .as_ref()
            .filter(|_| config.task.chat_template);
        if config.task.chat_template && template.is_none() {
            tracing::info!(
                "the model has no chat template: prompt and completion are concatenated and eos appended"
            );
        }
        let encoder = SftEncoder {
            tokenizer: &lm.tokenizer,
            template,
            bos: lm.add_bos,
            eos: lm.eos_token_ids.first().copied(),
            completion_only_loss: config.task.completion_only_loss,
            max_length: config.model.max_length,
        };
        let mut stats = Vec::new();
        let vocab = lm.model.config.vocab_size;
        let mut split = |name: &'static str, path: &Path| -> Result<Split> {
            let lines = read_jsonl_lines(path)?;
            let (examples, kept, s) = encoder.encode_all(path, &lines)?;
            if let Some((i, id)) = examples.iter().zip(&kept).find_map(|(e, &i)| {
                e.ids
                    .iter()
                    .find(|&&id| id as usize >= vocab)
                    .map(|&id| (i, id))
            }) {
                return Err(Error::Model(format!(
                    "{}:{}: token id {id} is outside the model's vocabulary of {vocab} (a tokenizer with added tokens the embeddings do not have)",
                    path.display(),
                    lines[i].0
                )));
            }
            let records: Vec<SftRecord> = lines.into_iter().map(|(_, r)| r).collect();
            tracing::info!(
                "{name}: {} records → {} examples, {} tokens ({} trained); {} cut at model.max_length = {}, {} dropped with no target token left",
                s.records,
                s.examples,
                s.tokens,
                s.target_tokens,
                s.truncated,
                config.model.max_length,
                s.dropped_no_target
            );
            if examples.is_empty() {
                return Err(Error::Input(format!(
                    "{}: no example keeps a target token within model.max_length = {}",
                    path.display(),
                    config.model.max_length
                )));
            }
            stats.push((name, s));
            Ok(Split {
                name,
                examples,
                records,
            })
        };
        let train = split("train", &config.data.train)?;
        let validation = config
            .data
            .validation
            .as_deref()
            .map(|p| split("validation", p))
            .transpose()?;
        let test = config
            .data
            .test
            .as_deref()
            .map(|p| split("test", p))
            .transpose()?;
        let report: serde_json::Map<String, serde_json::Value> = stats
            .iter()
            .map(|(n, s)| ((*n).to_string(), serde_json::json!(s)))
            .collect();
        write_json(
            &run_dir.join("data_report.json"),
            &serde_json::json!({ "sft": report }),
        )?;
        Ok(CausalLm {
            config: config.clone(),
            base,
            llama_config: lm.model.config.clone(),
            has_lm_head: lm.model.lm_head.is_some(),
            network: Some(lm.model),
            tokenizer: lm.tokenizer,
            chat_template: lm.chat_template,
            eos_token_ids: lm.eos_token_ids,
            add_bos: lm.add_bos,
            bos_token_id: lm.bos_token_id,
            train,
            validation,
            test,
            stats,
        })
    }

    /// Summed negative log-likelihood of the target tokens of `examples`, their count and
    /// how many the model ranks first, on `model`'s device: `([1], n, correct)` — the count
    /// of correct predictions only when `count_correct`.
    fn nll(
        model: &Llama,
        examples: &[&SftExample],
        device: &Device,
        count_correct: bool,
    ) -> Result<(Tensor<1>, usize, usize)> {
        let b = examples.len();
        let len = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
        let mut ids = vec![0i64; b * len];
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for (r, e) in examples.iter().enumerate() {
            for (t, (&id, &target)) in e.ids.iter().zip(&e.target).enumerate() {
                ids[r * len + t] = i64::from(id);
                // Position t − 1 predicts token t. Right padding: causal attention keeps
                // the real tokens' states as without it, and padded positions are no target.
                if t > 0 && target {
                    rows.push((r * len + t - 1) as i64);
                    targets.push(i64::from(id));
                }
            }
        }
        let n = rows.len();
        if n == 0 {
            return Ok((Tensor::<1>::zeros([1], device), 0, 0));
        }
        let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, len]), device);
        let hidden = model.hidden_states(input, &mut KvCache::new());
        let h = hidden.dims()[2];
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), device);
        let picked = hidden.reshape([b * len, h]).select(0, rows);
        let logits = model.lm_logits(picked);
        let correct = if count_correct {
            let best = to_vec(logits.clone().argmax(1).float().reshape([n]))?;
            best.iter()
                .zip(&targets)
                .filter(|(p, t)| **p as i64 == **t)
                .count()
        } else {
            0
        };
        let y = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), device);
        let nll = log_softmax(logits, 1).gather(1, y).sum().neg();
        Ok((nll.reshape([1]), n, correct))
    }

    /// Loss per target token, perplexity and next-token accuracy of `model` on `split`.
    fn scores(&self, model: &Llama, split: &Split, device: &Device) -> Result<Scores> {
        let bs = self.config.train.eval_batch_size.max(1);
        let mut order: Vec<usize> = (0..split.examples.len()).collect();
        order.sort_by_key(|&i| split.examples[i].ids.len());
        let (mut sum, mut n, mut correct) = (0.0f64, 0usize, 0usize);
        for chunk in order.chunks(bs) {
            let refs: Vec<&SftExample> = chunk.iter().map(|&i| &split.examples[i]).collect();
            let (nll, k, c) = Self::nll(model, &refs, device, true)?;
            sum += f64::from(to_vec(nll)?.first().copied().unwrap_or(f32::NAN));
            n += k;
            correct += c;
        }
        let loss = sum / n.max(1) as f64;
        let mut s = Scores::new();
        s.insert("loss".into(), loss);
        s.insert("perplexity".into(), loss.exp());
        s.insert("token_accuracy".into(), correct as f64 / n.max(1) as f64);
        Ok(s)
    }

    /// Greedy answers of `model` to every record's prompt (the conversation before its last
    /// assistant message), scored by exact match (both sides trimmed) with that message.
    fn generation_scores(&self, model: &Llama, split: &Split) -> Result<Scores> {
        let cfg = crate::llm::GenerationConfig {
            max_new_tokens: self.config.task.generate_max_new_tokens,
            stop_tokens: self.eos_token_ids.clone(),
            ..Default::default()
        };
        let template = self
            .chat_template
            .as_ref()
            .filter(|_| self.config.task.chat_template);
        let decode = |ids: &[u32]| {
            self.tokenizer
                .decode(ids, true)
                .map_err(|e| Error::Tokenizer(e.to_string()))
        };
        let (mut exact, mut n, mut empty) = (0usize, 0usize, 0usize);
        for record in &split.records {
            let Some((messages, answer)) = record.prompt_and_answer() else {
                continue;
            };
            let prompt = match (template, record) {
                (Some(t), _) => t.render(&messages, true)?,
                (None, SftRecord::PromptCompletion { prompt, .. }) => prompt.clone(),
                (None, SftRecord::Messages(_)) => continue,
            };
            // As `tunekit generate` encodes it (no second bos after a template's own).
            let ids = crate::llm::encode(&self.tokenizer, self.add_bos, &prompt)?;
            let vocab = self.llama_config.vocab_size;
            if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::Model(format!(
                    "{} split: a prompt has token id {id}, outside the model's vocabulary of {vocab}",
                    split.name
                )));
            }
            if ids.is_empty() {
                empty += 1;
                continue;
            }
            let generation = crate::llm::generate::generate(model, &ids, &cfg, &decode)?;
            exact += usize::from(generation.text.trim() == answer.trim());
            n += 1;
        }
        if empty > 0 {
            tracing::warn!(
                "{}: {empty} records with an empty prompt are not answered (exact_match is over the other {n})",
                split.name
            );
        }
        let mut s = Scores::new();
        if n > 0 {
            s.insert("exact_match".into(), exact as f64 / n as f64);
        }
        Ok(s)
    }

    /// The pretrained network, loaded again (for evaluating the exported model).
    fn base_network(&self, device: &Device) -> Result<Llama> {
        Ok(LanguageModel::open(&self.base, device)?.model)
    }

    /// Write the exported model into `export_dir` and return it loaded on `device`.
    fn export(&self, run: &Finished<'_, Scores>, export_dir: &Path) -> Result<Llama> {
        std::fs::create_dir_all(export_dir).map_err(|e| Error::io(export_dir, e))?;
        if let Some(opts) = &self.config.strategy.lora {
            let src = run.best_dir.join(ADAPTER_WEIGHTS);
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            write_atomic(&export_dir.join(ADAPTER_WEIGHTS), &bytes)?;
            let modules = llama::lora::modules_of(&opts.targets);
            write_json(
                &export_dir.join(ADAPTER_CONFIG),
                &llama::lora::adapter_config(&modules, opts, &self.base),
            )?;
            let base = self.base_network(run.device)?;
            return Ok(llama::lora::attach(base, export_dir, run.device)?.0);
        }
        let src = run.best_dir.join("model.safetensors");
        let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
        write_atomic(&export_dir.join("model.safetensors"), &bytes)?;
        let config = LlamaConfig {
            // Tied only when there is no own lm_head (a checkpoint may carry one).
            tie_word_embeddings: !self.has_lm_head,
            ..self.llama_config.clone()
        };
        self.write_hf_files(&config, export_dir)?;
        llama::load_hf_dir(export_dir, run.device)
    }

    /// `config.json`, `tokenizer.json`, `tokenizer_config.json` and `generation_config.json`
    /// of a transformers directory.
    fn write_hf_files(&self, config: &LlamaConfig, dir: &Path) -> Result<()> {
        let token = |id: Option<u32>| id.and_then(|i| self.tokenizer.id_to_token(i));
        let eos = self.eos_token_ids.first().copied();
        let bos = self.bos_token_id;
        write_json(&dir.join("config.json"), &config.to_hf_json(bos, eos))?;
        let json = tokenizer_json(&self.tokenizer, self.add_bos)?;
        write_atomic(&dir.join("tokenizer.json"), json.as_bytes())?;
        let mut tc = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": config.max_position_embeddings,
            "add_bos_token": self.add_bos.is_some(),
            "clean_up_tokenization_spaces": false,
        });
        if let Some(t) = token(bos) {
            tc["bos_token"] = t.into();
        }
        if let Some(t) = token(eos) {
            tc["eos_token"] = t.into();
        }
        if let Some(t) = &self.chat_template {
            tc["chat_template"] = t.source().into();
        }
        write_json(&dir.join("tokenizer_config.json"), &tc)?;
        write_json(
            &dir.join("generation_config.json"),
            &serde_json::json!({ "bos_token_id": bos, "eos_token_id": self.eos_token_ids }),
        )
    }
}

/// `tokenizer.json` for an exported model: the tokenizer as loaded, and for a model that
/// prepends bos (`add_bos`) a post-processor that does it, as transformers' fast tokenizers
/// for Llama do (`PreTrainedTokenizerFast` ignores `add_bos_token` without one). tunekit's own
/// encoding never applies it (special tokens are added by hand), so only the file changes.
fn tokenizer_json(tokenizer: &tokenizers::Tokenizer, add_bos: Option<u32>) -> Result<String> {
    let fail = |e: String| Error::Tokenizer(format!("tokenizer.json: {e}"));
    let mut out = tokenizer.clone();
    if let Some(id) = add_bos {
        let bos = tokenizer
            .id_to_token(id)
            .ok_or_else(|| fail(format!("bos id {id} is not in the vocabulary")))?;
        let processor = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single(format!("{bos} $A"))
            .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B:1")))
            .map_err(|e| fail(e.to_string()))?
            .special_tokens(vec![(bos.clone(), id)])
            .build()
            .map_err(|e| fail(e.to_string()))?;
        out.with_post_processor(Some(processor));
    }
    out.to_string(false).map_err(|e| fail(e.to_string()))
}

impl Objective for CausalLm {
    type Scores = Scores;
    type Model = Llama;

    fn build(
        &mut self,
        config: &RunConfig,
        resume_from: Option<&Path>,
        ad: &Device,
    ) -> Result<Built<Llama>> {
        // Taken, not cloned: a full fine-tune holds one copy of the weights.
        let network = self
            .network
            .take()
            .ok_or_else(|| Error::Engine("the decoder was already built".into()))?;
        let mut model = match (resume_from, &config.strategy.lora) {
            (Some(dir), None) => {
                drop(network);
                let path = dir.join("model.safetensors");
                let config = self.llama_config.clone();
                llama::load::build(config, &mut WeightFile::open(&path)?, ad)?
            }
            _ => network,
        };
        if let Some(opts) = &config.strategy.lora {
            // A's initial values come from the device RNG: seeded, so runs repeat.
            ad.seed(config.train.seed);
            let modules = llama::lora::modules_of(&opts.targets);
            model = llama::lora::apply(model, opts.rank, opts.alpha, &modules)?;
            if let Some(dir) = resume_from {
                model = llama::lora::load_adapter(model, &dir.join(ADAPTER_WEIGHTS), ad)?;
            }
        }
        Ok(Built { model, frozen: 0 })
    }

    fn layered_config(&self) -> Option<&crate::model::BertConfig> {
        None
    }

    fn train_lengths(&self) -> Vec<usize> {
        self.train.examples.iter().map(|e| e.ids.len()).collect()
    }

    fn describe(&self) -> String {
        let c = &self.llama_config;
        format!(
            "supervised fine-tuning of a {} decoder ({} layers, hidden {}): {} examples, {} target tokens",
            c.model_type,
            c.num_hidden_layers,
            c.hidden_size,
            self.train.examples.len(),
            self.train
                .examples
                .iter()
                .map(SftExample::targets)
                .sum::<usize>()
        )
    }

    fn normaliser(&self, group: &[Vec<usize>]) -> f64 {
        let n: usize = group
            .iter()
            .flatten()
            .map(|&i| self.train.examples[i].targets())
            .sum();
        n.max(1) as f64
    }

    fn loss_sum(&self, model: &Llama, idx: &[usize], ad: &Device) -> Result<Tensor<1>> {
        let refs: Vec<&SftExample> = idx.iter().map(|&i| &self.train.examples[i]).collect();
        Ok(Self::nll(model, &refs, ad, false)?.0)
    }

    fn validate(&self, model: &Llama, device: &Device) -> Result<Option<Validation<Scores>>> {
        let Some(val) = &self.validation else {
            return Ok(None);
        };
        let scores = self.scores(model, val, device)?;
        let value = scores
            .get(&self.config.train.metric)
            .copied()
            .unwrap_or(f64::NAN);
        let scalars = scores
            .iter()
            .map(|(k, v)| (format!("validation/{k}"), *v))
            .collect();
        let note = format!(
            " (perplexity {:.3}, next-token accuracy {:.4})",
            scores.get("perplexity").copied().unwrap_or(f64::NAN),
            scores.get("token_accuracy").copied().unwrap_or(f64::NAN)
        );
        Ok(Some(Validation {
            scores,
            value,
            scalars,
            note,
        }))
    }

    fn finish(self, mut run: Finished<'_, Scores>) -> Result<RunMetrics> {
        let export_dir = run.run_dir.join("model");
        let best = self.export(&run, &export_dir)?;
        let mut evaluated = Vec::new();
        for split in [&self.validation, &self.test].into_iter().flatten() {
            let mut s = self.scores(&best, split, run.device)?;
            if self.config.task.generate_max_new_tokens > 0 {
                s.extend(self.generation_scores(&best, split)?);
            }
            let line: Vec<String> = s.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            tracing::info!("{}: {}", split.name, line.join(", "));
            evaluated.push((split.name, s));
        }
        let get = |name: &str| {
            evaluated
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.clone())
        };
        let (validation, test) = (get("validation"), get("test"));
        if let Some(s) = &test {
            let scalars: Vec<(String, f64)> =
                s.iter().map(|(k, v)| (format!("test/{k}"), *v)).collect();
            let refs: Vec<(&str, f64)> = scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            run.tensorboard.scalars(run.exported_step(), &refs)?;
        }
        run.tensorboard.flush()?;
        let metrics = RunMetrics {
            labels: Vec::new(),
            metric: self.config.train.metric.clone(),
            best_step: run.state.best_step,
            validation: None,
            test: None,
            steps: run.state.step,
            stopped_early: run.state.stopped_early,
            train_time_s: run.train_time_s,
            train_examples_per_s: run.state.examples_seen as f64 / run.train_time_s.max(1e-9),
            trainable_parameters: run.trainable,
            task: TaskKind::CausalLm,
            validation_scores: validation,
            test_scores: test,
            warnings: Vec::new(),
            privacy: run.privacy.clone(),
        };
        let mut json = serde_json::to_value(&metrics).map_err(|e| Error::Engine(e.to_string()))?;
        if let Some(obj) = json.as_object_mut() {
            let counts: serde_json::Map<String, serde_json::Value> = self
                .stats
                .iter()
                .map(|(n, s)| ((*n).to_string(), serde_json::json!(s)))
                .collect();
            obj.insert("sft".into(), counts.into());
        }
        write_json(&run.run_dir.join("metrics.json"), &json)?;
        crate::card::write(&export_dir, &self.config, &metrics, None, run.lora())?;
        super::classification::write_report(run.run_dir);
        tracing::info!(
            "model in {}, scores in {}",
            export_dir.display(),
            run.run_dir.join("metrics.json").display()
        );
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_tokenizer_prepends_bos_only_for_models_that_add_it() {
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "unk_token": "[UNK]",
                      "vocab": {"<s>": 0, "[UNK]": 1, "hi": 2, "there": 3}}
        });
        let tok = tokenizers::Tokenizer::from_bytes(json.to_string()).unwrap();
        let ids = |text: &str, add_bos: Option<u32>, special: bool| {
            let t: tokenizers::Tokenizer = tokenizer_json(&tok, add_bos).unwrap().parse().unwrap();
            t.encode(text, special).unwrap().get_ids().to_vec()
        };
        assert_eq!(ids("hi there", Some(0), true), vec![0, 2, 3]);
        assert_eq!(ids("hi there", Some(0), false), vec![2, 3]);
        assert_eq!(ids("hi there", None, true), vec![2, 3]);
    }

    #[test]
    fn nll_of_a_padded_batch_equals_the_sum_of_each_example_alone() {
        // A tiny llama from a formula (no file): 2 layers, GQA 4/2 heads.
        let device = Device::flex();
        let model = llama::tests::formula_model(&device);
        let a = SftExample {
            ids: vec![1, 5, 9, 3, 7],
            target: vec![false, false, true, true, true],
            truncated: false,
        };
        let b = SftExample {
            ids: vec![2, 4, 6],
            target: vec![false, true, true],
            truncated: false,
        };
        let value = |t: Tensor<1>| f64::from(to_vec(t).unwrap()[0]);
        let (both, n, _) = CausalLm::nll(&model, &[&a, &b], &device, true).unwrap();
        let (alone_a, na, _) = CausalLm::nll(&model, &[&a], &device, false).unwrap();
        let (alone_b, nb, _) = CausalLm::nll(&model, &[&b], &device, false).unwrap();
        assert_eq!((n, na, nb), (5, 3, 2));
        let alone_a = value(alone_a);
        let (both, sum) = (value(both), alone_a + value(alone_b));
        assert!(
            (both - sum).abs() < 1e-4 * sum.abs().max(1.0),
            "{both} {sum}"
        );
        // The reference: −Σ log softmax(forward logits)[next token] from the full forward.
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(a.ids.iter().map(|&x| i64::from(x)).collect(), [1, 5]),
            &device,
        );
        let logits = to_vec(model.forward(ids, &mut KvCache::new(), false)).unwrap();
        let v = model.config.vocab_size;
        let mut reference = 0.0f64;
        for t in 2..5 {
            let row = &logits[(t - 1) * v..t * v];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            reference += lse - row[a.ids[t] as usize] as f64;
        }
        assert!(
            (alone_a - reference).abs() < 1e-4 * reference.abs().max(1.0),
            "{alone_a} {reference}"
        );
    }
}
