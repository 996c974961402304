//! `tunekit generate`: complete prompts with a decoder language model (GGUF file or
//! transformers directory) and print the completions to stdout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use tunekit::llm::{GenerationConfig, LanguageModel};

/// Flags of `tunekit generate`.
#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// A `.gguf` file or a transformers model directory (llama, mistral, qwen2, qwen3).
    #[arg(long)]
    model: PathBuf,
    /// A LoRA adapter directory (PEFT's `adapter_config.json` + `adapter_model.safetensors`,
    /// e.g. the `model/` of a `causal_lm` run with `[strategy.lora]`) to apply to --model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The prompt (a user message; the chat template is applied unless --raw).
    #[arg(long, conflicts_with = "input", required_unless_present = "input")]
    prompt: Option<String>,
    /// A file of prompts, one per line (`.jsonl`: objects with a `prompt` field); prints one
    /// JSON line per prompt: {"prompt", "completion", "stop"}.
    #[arg(long)]
    input: Option<PathBuf>,
    /// New tokens at most.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Use the prompt as is (no chat template).
    #[arg(long)]
    raw: bool,
    /// Sampling temperature (default: greedy decoding).
    #[arg(long)]
    temperature: Option<f32>,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling: the smallest set of tokens with probability ≥ p.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Penalty on tokens already in the sequence (transformers' repetition_penalty).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop before this string (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
}

fn read_prompts(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| tunekit::Error::io(path, e))
        .with_context(|| "--input")?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if jsonl {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| tunekit::Error::Input(format!("{}:{}: {e}", path.display(), i + 1)))?;
            let p = v.get("prompt").and_then(|p| p.as_str()).ok_or_else(|| {
                tunekit::Error::Input(format!(
                    "{}:{}: no string field `prompt`",
                    path.display(),
                    i + 1
                ))
            })?;
            prompts.push(p.to_string());
        } else {
            prompts.push(line.to_string());
        }
    }
    Ok(prompts)
}

/// Run `tunekit generate`.
pub(crate) fn generate_command(
    args: GenerateArgs,
    quiet: bool,
    device: &burn::tensor::Device,
) -> anyhow::Result<()> {
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        stop_tokens: Vec::new(),
        stop_strings: args.stop.clone(),
    };
    cfg.validate()?;
    let prompts = match (&args.prompt, &args.input) {
        (Some(p), _) => vec![p.clone()],
        (None, Some(path)) => read_prompts(path)?,
        (None, None) => anyhow::bail!(tunekit::Error::Config(
            "--prompt or --input is needed".into()
        )),
    };
    let start = Instant::now();
    let mut lm = LanguageModel::open(&args.model, device)?;
    if let Some(dir) = &args.adapter {
        let (model, adapter) = tunekit::model::llama::lora::attach(lm.model, dir, device)?;
        lm.model = model;
        if !quiet {
            eprintln!(
                "adapter {} (rank {}, alpha {}, on {})",
                dir.display(),
                adapter.r,
                adapter.lora_alpha,
                adapter.target_modules.join(", ")
            );
        }
    }
    if !quiet {
        eprintln!(
            "loaded {} ({} layers) in {:.1} s",
            args.model.display(),
            lm.model.config.num_hidden_layers,
            start.elapsed().as_secs_f64()
        );
    }
    let mut tokens = 0usize;
    let start = Instant::now();
    for p in &prompts {
        let prompt = lm.prompt(p, !args.raw)?;
        let g = lm.complete(&prompt, &cfg)?;
        tokens += g.ids.len();
        if args.input.is_some() {
            let line = serde_json::json!({"prompt": p, "completion": g.text, "stop": g.stop});
            println!("{line}");
        } else {
            println!("{}", g.text);
            // The cut is said even with --quiet (stdout holds only the completion).
            if matches!(g.stop, tunekit::llm::StopReason::Length) {
                eprintln!(
                    "note: stopped at --max-new-tokens {} (the completion may be cut)",
                    cfg.max_new_tokens
                );
            }
        }
    }
    if !quiet {
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{tokens} new tokens in {secs:.2} s ({:.1} tokens/s)",
            tokens as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}
