//! `bench`: time tunekit's training step and inference on a fixed workload, for
//! docs/benchmarks.md. The PyTorch counterpart is `tools/bench_torch.py`.
//!
//! Workload (issue "CPU training and inference at least as fast as PyTorch"): all-MiniLM-L6-v2,
//! batch 32 × 64 tokens, mean pooling + linear head, cross-entropy, AdamW, dropout off; the
//! median of `--steps` steps after `--warmup` warm-up steps.
//!
//!     cargo run --release --bin bench -- step
//!     cargo run --release --bin bench -- --dropout 0.1 --precision bf16 step
//!     cargo run --release --bin bench -- --batch 1 --steps 30 infer
//!     cargo run --release --bin bench -- --batch 32 infer
//!     cargo run --release --bin bench -- --int8 --batch 32 infer
//!     cargo run --release --bin bench -- --preset base --batch 8 --seq 512 step
//!     cargo run --release --bin bench -- peak
//!     cargo run --release --features cuda --bin bench -- --device cuda --preset base step
//!
//! `--preset base` is a BERT-base-shaped model (12 layers, hidden 768, 12 heads, FFN 3072,
//! vocabulary 30522) with weights from a formula, written once to the temp directory: no
//! download; `tools/bench_torch.py --preset base` builds the same shape from a config. Step and
//! inference lines carry the workload's FLOPs and the achieved GFLOP/s; `peak` measures the
//! cores' f32 FMA peak (`tunekit_kernels::peak`) to compare them with.

#![forbid(unsafe_code)]

use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use burn::optim::GradientsParams;
use clap::{Parser, Subcommand};
use tunekit::batch::{collate, label_tensor};
use tunekit::config::RunConfig;
use tunekit::model::ModelDir;
use tunekit::model::weights::{ClassifierSpec, DropoutOverride, load_classifier, to_vec};
use tunekit::model::{Pooling, Precision, SequenceClassifier};
use tunekit::tokenize::Tokens;
use tunekit::train::{build_optimizer, cross_entropy_sum};

mod allocator;

#[derive(Parser)]
struct Cli {
    /// Model directory.
    #[arg(long, default_value = "assets/models/all-MiniLM-L6-v2")]
    model: String,
    /// A size preset instead of `--model`: `base` (BERT-base shape, weights from a formula).
    #[arg(long, conflicts_with = "model")]
    preset: Option<Preset>,
    /// Where the step or inference runs: cpu (default), cuda, cuda:N, vulkan, wgpu (the GPU
    /// ones need a build with that feature; timings wait for the device: each timed
    /// iteration ends by reading a result back).
    #[arg(long, default_value = "cpu")]
    device: tunekit::device::DeviceKind,
    /// Threads of `peak` (default: the pool's, `RAYON_NUM_THREADS` or the core count).
    #[arg(long)]
    threads: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 32, value_parser = positive)]
    batch: usize,
    /// Tokens per sequence (2 up to the model's max_position_embeddings).
    #[arg(long, default_value_t = 64)]
    seq: usize,
    /// Timed iterations.
    #[arg(long, default_value_t = 18, value_parser = positive)]
    steps: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Hidden and attention dropout of the training step (0: the workload; the MR
    /// recipe uses 0.1).
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Inference with the encoder quantised to int8 (`tunekit quantize`'s scheme).
    #[arg(long)]
    int8: bool,
    /// Number format of the encoder's linear-layer products (`train.precision`): f32 or bf16.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// One training step: forward + loss, backward, optimiser.
    Step,
    /// Inference forward pass (no autodiff).
    Infer,
    /// The cores' f32 peak: a plain FMA loop on every thread (the floor a step is compared to).
    Peak,
}

/// A model shape the bench makes itself (no download).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Preset {
    /// BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 30522, 512 positions.
    Base,
}

/// FLOPs of one forward pass of a BERT-shaped encoder over `batch` × `seq` tokens: the linear
/// layers (2·h·(4h + 2f) per token and layer: Q, K, V, output, and the two FFN products) and
/// attention's two batched products (2 · 2·s·h per token and layer). Embedding lookups,
/// normalisation and element-wise ops are left out (they are a few percent). A training step
/// counts 3× (the backward pass computes two products per forward product), the usual rule.
fn forward_flops(config: &tunekit::model::BertConfig, batch: usize, seq: usize) -> f64 {
    let (h, f, l) = (
        config.hidden_size as f64,
        config.intermediate_size as f64,
        config.num_hidden_layers as f64,
    );
    let tokens = (batch * seq) as f64;
    tokens * l * (2.0 * h * (4.0 * h + 2.0 * f) + 4.0 * seq as f64 * h)
}

/// Write the preset's model directory under the temp directory once (config.json,
/// model.safetensors with weights from a formula, the MiniLM asset's WordPiece tokenizer,
/// which has the same 30522-token vocabulary) and return its path.
fn preset_dir(preset: Preset) -> Result<String> {
    let Preset::Base = preset;
    let dir = std::env::temp_dir().join("tunekit-bench-base");
    let done = dir.join("model.safetensors");
    if done.exists() {
        return Ok(dir.display().to_string());
    }
    std::fs::create_dir_all(&dir)?;
    let tokenizer = std::path::Path::new("assets/models/all-MiniLM-L6-v2/tokenizer.json");
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (the preset borrows the MiniLM asset's tokenizer: run scripts/fetch-assets.sh from the repository root)",
            tokenizer.display()
        )
    })?;
    let config = serde_json::json!({
        "model_type": "bert", "architectures": ["BertModel"], "hidden_size": 768,
        "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
        "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
        "hidden_act": "gelu", "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "pad_token_id": 0,
    });
    let config_path = dir.join("config.json");
    tunekit::fsutil::write_atomic(
        &config_path,
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    let parsed = tunekit::model::BertConfig::from_file(&config_path)?;
    // Weights: uniform in ±0.02 from a xorshift stream (timing does not depend on values);
    // LayerNorm scales 1, biases 0, as a freshly initialised BERT.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let tensors = tunekit::model::weights::encoder_shapes(&parsed)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if shape.len() == 1 {
                vec![1.0; n]
            } else {
                (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
                    })
                    .collect()
            };
            (name, shape, values)
        })
        .collect();
    tunekit::model::weights::write_safetensors(tensors, &done)?;
    Ok(dir.display().to_string())
}

/// A count of at least 1 (clap reports anything else as a usage error, exit code 2).
fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn peak_rss_gib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kib| kib / (1024.0 * 1024.0))
}

/// Deterministic pseudo-random token ids: [CLS] w… [SEP], all positions real.
fn tokens(batch: usize, seq: usize) -> Vec<Tokens> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..batch)
        .map(|_| {
            let mut ids = vec![101u32];
            for _ in 1..seq - 1 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ids.push(1000 + (x % 29000) as u32);
            }
            ids.push(102);
            Tokens {
                type_ids: vec![0; ids.len()],
                ids,
                truncated: false,
            }
        })
        .collect()
}

fn load(model: &str, dropout: f64, device: &burn::tensor::Device) -> Result<SequenceClassifier> {
    let dir = ModelDir::open(model)?;
    let spec = ClassifierSpec {
        head: Default::default(),
        num_labels: 2,
        pooling: Pooling::Mean,
        dropout: DropoutOverride {
            hidden: Some(dropout),
            attention: Some(dropout),
        },
        seed: 0,
        require_head: false,
    };
    Ok(load_classifier(&dir.weights_path(), &dir.config, &spec, device)?.0)
}

/// Where bf16 products ran: AMX, emulated (operands rounded to bf16, f32 products), or the
/// GPU's bf16 matmul.
fn amx_note(p: Precision, device: tunekit::device::DeviceKind) -> &'static str {
    let cpu = device == tunekit::device::DeviceKind::Cpu;
    match (p, cpu, tunekit::model::bf16::amx_available()) {
        (Precision::F32, _, _) => "",
        (Precision::Bf16, false, _) => " (GPU bf16 matmul)",
        (Precision::Bf16, true, true) => " (AMX)",
        (Precision::Bf16, true, false) => " (emulated: no AMX)",
    }
}

/// The CPU's model name from /proc/cpuinfo (Linux), for the figures' machine column.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn main() -> std::process::ExitCode {
    allocator::keep_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            // Bad input (model files, lengths) is exit code 2, as in `tunekit`.
            let bad_input = err
                .downcast_ref::<tunekit::Error>()
                .is_some_and(|e| !matches!(e, tunekit::Error::Engine(_)));
            std::process::ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

fn run(mut cli: Cli) -> Result<()> {
    if let What::Peak = cli.what {
        let threads = cli.threads.unwrap_or_else(|| {
            std::env::var("RAYON_NUM_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        });
        let peak = tunekit_kernels::peak::measure(threads, 2.0);
        println!(
            "{}",
            serde_json::json!({
                "workload": format!("f32 FMA peak, {} threads, {} ({} lanes)", peak.threads, peak.isa, peak.lanes),
                "gflops": peak.gflops,
                "cpu": cpu_name(),
            })
        );
        return Ok(());
    }
    if let Some(preset) = cli.preset {
        cli.model = preset_dir(preset)?;
    }
    // The sequence must fit the position table ([CLS] and [SEP] included).
    let config = ModelDir::open(&cli.model)?.config;
    tunekit::tokenize::check_max_length(cli.seq, &config, std::path::Path::new(&cli.model))?;
    if config.vocab_size < 30_000 {
        return Err(tunekit::Error::Config(format!(
            "{}: vocab_size {}: the workload draws token ids up to 30000",
            cli.model, config.vocab_size
        ))
        .into());
    }
    if cli.seq < 2 {
        return Err(tunekit::Error::Config(format!(
            "--seq {}: a sequence holds [CLS] and [SEP], so at least 2 tokens",
            cli.seq
        ))
        .into());
    }
    let toks = tokens(cli.batch, cli.seq);
    let refs: Vec<&Tokens> = toks.iter().collect();
    let labels: Vec<usize> = (0..cli.batch).map(|i| i % 2).collect();
    let plain = tunekit::device::device(cli.device)?;
    let machine = match cli.device {
        tunekit::device::DeviceKind::Cpu => cpu_name(),
        other => format!("{other} (host {})", cpu_name()),
    };
    let flops = forward_flops(&config, cli.batch, cli.seq);
    match cli.what {
        What::Peak => {}
        What::Step => {
            let ad = plain.clone().autodiff();
            let mut model = load(&cli.model, cli.dropout, &ad)?;
            model
                .encoder
                .set_precision(tunekit::model::bf16::for_device(cli.precision, &plain)?);
            let config = RunConfig::parse(
                &format!(
                    "[model]\npath = {:?}\n[data]\ntrain = \"unused.tsv\"\n[train]\nweight_decay = 0.01\n",
                    cli.model
                ),
                "bench",
                &[],
            )?;
            let (mut optim, _) = build_optimizer(&config, &model);
            let (mut fwd, mut bwd, mut opt, mut total) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for i in 0..cli.warmup + cli.steps {
                let t0 = Instant::now();
                let batch = collate(&refs, 0, &ad);
                let loss = cross_entropy_sum(model.forward(&batch), label_tensor(&labels, &ad))
                    .div_scalar(cli.batch as f64);
                let _ = to_vec(loss.clone().detach())?;
                let t1 = Instant::now();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let t2 = Instant::now();
                model = optim.step(5e-5, model, grads);
                // Materialise one updated weight so the step is complete before timing.
                let _ = to_vec(model.classifier.weight.val())?;
                let t3 = Instant::now();
                if i >= cli.warmup {
                    fwd.push((t1 - t0).as_secs_f64() * 1e3);
                    bwd.push((t2 - t1).as_secs_f64() * 1e3);
                    opt.push((t3 - t2).as_secs_f64() * 1e3);
                    total.push((t3 - t0).as_secs_f64() * 1e3);
                }
            }
            let step_ms = median(total);
            println!(
                "{}",
                serde_json::json!({
                    "workload": format!("train step, batch {} x {} tokens, mean pooling, AdamW, dropout {}, {} products{}", cli.batch, cli.seq, cli.dropout, cli.precision, amx_note(cli.precision, cli.device)),
                    "steps": cli.steps,
                    "step_ms_median": step_ms,
                    "forward_ms_median": median(fwd),
                    "backward_ms_median": median(bwd),
                    "optimizer_ms_median": median(opt),
                    "gflop_per_step": 3.0 * flops / 1e9,
                    "gflops_achieved": 3.0 * flops / 1e6 / step_ms,
                    "peak_rss_gib": peak_rss_gib(),
                    "device": machine,
                })
            );
        }
        What::Infer => {
            let mut model = load(&cli.model, 0.0, &plain)?.valid();
            model
                .encoder
                .set_precision(tunekit::model::bf16::for_device(cli.precision, &plain)?);
            if cli.int8 {
                let (encoder, _) = tunekit::model::quant::quantize_encoder(&model)?;
                model.encoder.set_int8(Some(std::sync::Arc::new(encoder)));
            }
            let mut times = Vec::new();
            for i in 0..cli.warmup + cli.steps {
                let t0 = Instant::now();
                let batch = collate(&refs, 0, &plain);
                let _ = to_vec(model.forward(&batch))?;
                if i >= cli.warmup {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            let latency_ms = median(times.clone());
            let mut sorted = times;
            sorted.sort_by(f64::total_cmp);
            let p99 = sorted[((sorted.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
            println!(
                "{}",
                serde_json::json!({
                    "workload": format!("inference{}, batch {} x {} tokens, {} products{}", if cli.int8 { " (int8)" } else { "" }, cli.batch, cli.seq, cli.precision, amx_note(cli.precision, cli.device)),
                    "iterations": cli.steps,
                    "latency_ms_median": latency_ms,
                    "latency_ms_p99": p99,
                    "examples_per_s": cli.batch as f64 * 1e3 / latency_ms,
                    "gflop_per_batch": flops / 1e9,
                    "gflops_achieved": flops / 1e6 / latency_ms,
                    "peak_rss_gib": peak_rss_gib(),
                    "device": machine,
                })
            );
        }
    }
    Ok(())
}
