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

/// Whether bf16 products ran on AMX or were emulated at f32 speed.
fn amx_note(p: Precision) -> &'static str {
    match (p, tunekit::model::bf16::amx_available()) {
        (Precision::F32, _) => "",
        (Precision::Bf16, true) => " (AMX)",
        (Precision::Bf16, false) => " (emulated: no AMX)",
    }
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

fn run(cli: Cli) -> Result<()> {
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
    let plain = burn::tensor::Device::flex();
    match cli.what {
        What::Step => {
            let ad = plain.clone().autodiff();
            let mut model = load(&cli.model, cli.dropout, &ad)?;
            model.encoder.set_precision(cli.precision);
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
            println!(
                "{}",
                serde_json::json!({
                    "workload": format!("train step, batch {} x {} tokens, mean pooling, AdamW, dropout {}, {} products{}", cli.batch, cli.seq, cli.dropout, cli.precision, amx_note(cli.precision)),
                    "steps": cli.steps,
                    "step_ms_median": median(total),
                    "forward_ms_median": median(fwd),
                    "backward_ms_median": median(bwd),
                    "optimizer_ms_median": median(opt),
                    "peak_rss_gib": peak_rss_gib(),
                })
            );
        }
        What::Infer => {
            let mut model = load(&cli.model, 0.0, &plain)?.valid();
            model.encoder.set_precision(cli.precision);
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
            let mut sorted = times.clone();
            sorted.sort_by(f64::total_cmp);
            let p99 = sorted[((sorted.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
            println!(
                "{}",
                serde_json::json!({
                    "workload": format!("inference{}, batch {} x {} tokens, {} products{}", if cli.int8 { " (int8)" } else { "" }, cli.batch, cli.seq, cli.precision, amx_note(cli.precision)),
                    "iterations": cli.steps,
                    "latency_ms_median": median(times),
                    "latency_ms_p99": p99,
                    "examples_per_s": cli.batch as f64 * 1e3 / median(sorted),
                    "peak_rss_gib": peak_rss_gib(),
                })
            );
        }
    }
    Ok(())
}
