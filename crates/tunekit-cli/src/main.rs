//! `tunekit`: thin command-line glue over the `tunekit` library. Flags are parsed here, in one
//! place, and turned into validated library calls; every error is printed with its context and
//! exits with code 2 (bad input) or 1 (anything else).

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tunekit::config::{RunConfig, parse_format};
use tunekit::data::DataSpec;
use tunekit::device::DeviceKind;
use tunekit::train::TrainOptions;

mod allocator;
mod commands;
mod generate;

#[derive(Parser)]
#[command(
    name = "tunekit",
    version,
    about = "Fine-tune pretrained text encoders from one config file"
)]
struct Cli {
    /// cpu (default), cuda or cuda:N, vulkan, wgpu (the GPU ones need a build with that cargo
    /// feature: README, "GPUs"). `train --devices` spreads training over several.
    #[arg(long, global = true)]
    device: Option<DeviceKind>,
    /// Hide progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fine-tune a model as described by CONFIG.toml.
    Train(TrainArgs),
    /// Complete a prompt with a decoder language model (GGUF file or transformers directory).
    Generate(generate::GenerateArgs),
    /// Train a student on a teacher's soft targets (a config with a [distill] section).
    Distill(TrainArgs),
    /// Evaluate a fine-tuned model on a labelled file.
    Eval(EvalArgs),
    /// Predict labels for every row of a file (JSONL output, streaming).
    Predict(PredictArgs),
    /// Sentence embeddings as the model's sentence-transformers config makes them (JSONL output).
    Embed(EmbedArgs),
    /// Serve a fine-tuned model over HTTP (dynamic batching, metrics, drift).
    Serve(ServeArgs),
    /// Fold a LoRA run's adapters into the base weights: a plain HF model directory.
    Merge {
        /// The LoRA model directory (RUN/model).
        #[arg(long)]
        model: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Hyperparameter search over the config's [search] section (grid, random or TPE; median
    /// or successive-halving pruning); resumes an interrupted search in the same directory.
    Search(SearchArgs),
    /// Export a fine-tuned model: a Hugging Face directory (transformers loads it) or ONNX.
    Export {
        /// The fine-tuned model directory (RUN/model; LoRA adapters are merged).
        #[arg(long)]
        model: String,
        /// `hf` or `onnx`.
        #[arg(long, value_enum)]
        format: ExportFormatArg,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Prune a fine-tuned model: remove attention heads / FFN neurons (a smaller, faster dense
    /// model) and/or zero the smallest weights; optionally fine-tune it to recover.
    Prune(PruneArgs),
    /// Quantise a fine-tuned model's encoder to int8 (per-channel weights, per-token dynamic
    /// activations); eval, predict, serve and compress-report run the int8 model.
    Quantize {
        /// The fine-tuned model directory (RUN/model; LoRA adapters are merged).
        #[arg(long)]
        model: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Compare versions of a model (base, pruned, distilled …) on one labelled file: size,
    /// parameters, batch-1 latency, batch-32 throughput, accuracy (a Markdown table).
    CompressReport(CompressReportArgs),
    /// (Re)write RUN_DIR/report.html: curves, confusion matrix, ROC/PR, calibration, errors.
    Report {
        /// A training run directory (one with metrics.json).
        run_dir: PathBuf,
    },
    /// The experiment index (runs/index.sqlite): list, show and compare runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Check or prepare data: cleaning, de-duplication, leakage, PII, lengths (a data report).
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Inspect models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Args)]
struct TrainArgs {
    /// The run configuration (TOML).
    config: PathBuf,
    /// Override a config value: --set section.key=value (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Run directory (default: run.dir/run.name from the config).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run in the run directory from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stratified K-fold cross-validation: K runs in RUN_DIR/fold-N, mean ± std in
    /// RUN_DIR/metrics.json.
    #[arg(long, value_name = "K", conflicts_with = "resume")]
    cv: Option<usize>,
    /// Data-parallel training over several devices of one kind, e.g. `cuda:0,cuda:1`
    /// (sets `train.devices`; the first device evaluates and checkpoints).
    #[arg(long, value_name = "DEVICE,DEVICE,…")]
    devices: Option<String>,
}

impl TrainArgs {
    /// `--set` overrides, with `--devices` as `train.devices`.
    fn overrides(&self) -> anyhow::Result<Vec<String>> {
        let mut set = self.set.clone();
        if let Some(list) = &self.devices {
            let kinds = tunekit::device::parse_devices(list)
                .map_err(|e| tunekit::Error::Config(format!("--devices: {e}")))?;
            let quoted: Vec<String> = kinds.iter().map(|k| format!("\"{k}\"")).collect();
            set.push(format!("train.devices=[{}]", quoted.join(", ")));
        }
        Ok(set)
    }
}

#[derive(Args)]
struct CompressReportArgs {
    /// Model directories; the first is the baseline for the accuracy change.
    #[arg(required = true)]
    models: Vec<String>,
    /// Labelled data file (e.g. the test split).
    #[arg(long)]
    data: PathBuf,
    /// Column holding the label.
    #[arg(long, default_value = "label")]
    label_column: String,
    #[command(flatten)]
    data_args: DataArgs,
    /// Inputs timed one at a time for the batch-1 latency.
    #[arg(long, default_value_t = 100)]
    latency_inputs: usize,
    /// Also write the table (Markdown) and rows (JSON, same name with .json) here.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct PruneArgs {
    /// The fine-tuned model directory (RUN/model; LoRA adapters are merged).
    #[arg(long)]
    model: String,
    /// Output directory (HF layout + prune_report.json).
    #[arg(long)]
    out: PathBuf,
    /// Share of attention heads to remove in every layer (structured).
    #[arg(long, default_value_t = 0.0)]
    heads: f64,
    /// Share of feed-forward neurons to remove in every layer (structured).
    #[arg(long, default_value_t = 0.0)]
    ffn: f64,
    /// Target share of zero weights in the encoder's linear layers (unstructured magnitude).
    #[arg(long)]
    sparsity: Option<f64>,
    /// Unstructured pruning per weight matrix rather than one global threshold.
    #[arg(long)]
    per_layer: bool,
    /// Fine-tune the pruned model this many epochs with the run's config (OUT/recover).
    #[arg(long, default_value_t = 0)]
    recover_epochs: usize,
    /// The run config for recovery (default: config.toml beside the model directory).
    #[arg(long)]
    config: Option<PathBuf>,
    /// How heads and neurons are ranked: weight magnitude, or first-order Taylor on
    /// `--calibration` data.
    #[arg(long, value_enum, default_value = "magnitude")]
    importance: ImportanceArg,
    /// Labelled data for Taylor importance (e.g. the validation split).
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Calibration rows used (spread over the file).
    #[arg(long, default_value_t = 512)]
    calibration_rows: usize,
    /// Column holding the calibration label.
    #[arg(long, default_value = "label")]
    label_column: String,
    #[command(flatten)]
    data_args: DataArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ImportanceArg {
    /// Weight norms (no data).
    Magnitude,
    /// First-order Taylor expansion of the loss on calibration data.
    Taylor,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormatArg {
    /// Hugging Face layout: config.json, model.safetensors, tokenizer, model card.
    Hf,
    /// ONNX graph (opset 17, dynamic batch and sequence axes) + tokenizer + config.
    Onnx,
}

#[derive(Args)]
struct SearchArgs {
    /// A run configuration with a [search] section.
    config: PathBuf,
    /// Override a config value: --set section.key=value (repeatable; search.trials=20 too).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Study directory (default: run.dir/run.name from the config).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Trials run at once; each gets cores / N threads.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Study store shared by workers on several machines: postgresql://USER@HOST/DB
    /// (default: search.storage from the config, else STUDY/search.sqlite).
    #[arg(long, value_name = "URL")]
    storage: Option<String>,
    /// Study name in the shared store (default: search.study, else run.name).
    #[arg(long, value_name = "NAME")]
    study: Option<String>,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// A table of all runs.
    List {
        /// Runs directory holding index.sqlite.
        #[arg(long, default_value = "runs")]
        dir: PathBuf,
        /// Sort by a metric, best first: validation_accuracy, validation_macro_f1,
        /// test_accuracy, test_macro_f1, train_time_s (shortest first).
        #[arg(long)]
        sort: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Read the shared index in this PostgreSQL database instead (runs of every machine).
        #[arg(long, value_name = "URL")]
        index: Option<String>,
    },
    /// One run: status, metrics, config.
    Show {
        /// Run name or run directory.
        run: String,
        /// Runs directory holding index.sqlite.
        #[arg(long, default_value = "runs")]
        dir: PathBuf,
        /// Read the shared index in this PostgreSQL database instead.
        #[arg(long, value_name = "URL")]
        index: Option<String>,
    },
    /// Runs side by side: metrics, then the config keys that differ.
    Compare {
        /// Run names or directories (two or more).
        #[arg(num_args = 2.., required = true)]
        runs: Vec<String>,
        /// Runs directory holding index.sqlite.
        #[arg(long, default_value = "runs")]
        dir: PathBuf,
        /// Read the shared index in this PostgreSQL database instead.
        #[arg(long, value_name = "URL")]
        index: Option<String>,
    },
    /// Copy a runs directory's index.sqlite into the shared index in PostgreSQL, so every
    /// machine's `tunekit runs list --index URL` shows these runs.
    Push {
        /// Runs directory holding index.sqlite.
        #[arg(long, default_value = "runs")]
        dir: PathBuf,
        /// The PostgreSQL database: postgresql://USER@HOST/DB.
        #[arg(long, value_name = "URL")]
        index: String,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Run the data pipeline of a run config and print the data report.
    Check {
        /// The run configuration (TOML).
        config: PathBuf,
        /// Override a config value: --set section.key=value (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also run the checks of `train --cv K` (every class needs at least K rows).
        #[arg(long, value_name = "K")]
        cv: Option<usize>,
    },
    /// Run the data pipeline and write the prepared splits (JSONL) and the report to a
    /// directory.
    Prepare {
        /// The run configuration (TOML).
        config: PathBuf,
        /// Override a config value: --set section.key=value (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// How to read a data file; defaults suit a `text<TAB>label` file with a header.
#[derive(Args, Clone)]
struct DataArgs {
    /// csv, tsv, jsonl or parquet (default: from the extension).
    #[arg(long)]
    format: Option<String>,
    /// Character encoding: utf-8, latin-1 or windows-1252.
    #[arg(long, default_value = "utf-8", value_parser = parse_encoding)]
    encoding: tunekit::data::TextEncoding,
    /// Replace undecodable bytes with U+FFFD instead of failing.
    #[arg(long)]
    replace_invalid: bool,
    /// Column holding the text.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Column holding the second text of a pair.
    #[arg(long)]
    text_pair_column: Option<String>,
    /// The file has no header row (columns are then named 0, 1, ...).
    #[arg(long)]
    no_header: bool,
    /// Field delimiter (one character).
    #[arg(long)]
    delimiter: Option<char>,
    /// Quotes in CSV/TSV: auto (RFC 4180 for CSV, none for TSV), rfc4180 or none.
    #[arg(long, default_value = "auto", value_parser = parse_quoting)]
    quoting: tunekit::data::Quoting,
}

impl DataArgs {
    fn spec(&self, path: PathBuf, label_column: Option<String>) -> anyhow::Result<DataSpec> {
        let format = match &self.format {
            Some(f) => Some(parse_format(f).ok_or_else(|| {
                tunekit::Error::Config(format!("--format {f}: expected csv, tsv, jsonl or parquet"))
            })?),
            None => None,
        };
        let delimiter = match self.delimiter {
            Some(c) if c.is_ascii() => Some(c as u8),
            Some(c) => {
                return Err(
                    tunekit::Error::Config(format!("--delimiter {c:?} must be ASCII")).into(),
                );
            }
            None => None,
        };
        Ok(DataSpec {
            path,
            format,
            delimiter,
            quoting: self.quoting,
            has_header: !self.no_header,
            text_column: self.text_column.clone(),
            text_pair_column: self.text_pair_column.clone(),
            label_column,
            encoding: self.encoding,
            replace_invalid: self.replace_invalid,
            fill_label: None,
        })
    }
}

fn parse_quoting(s: &str) -> Result<tunekit::data::Quoting, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("unknown quoting `{s}`: expected auto, rfc4180 or none"))
}

fn parse_encoding(s: &str) -> Result<tunekit::data::TextEncoding, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("unknown encoding `{s}`: expected utf-8, latin-1 or windows-1252"))
}

#[derive(Args)]
struct EvalArgs {
    /// Fine-tuned model directory (e.g. runs/NAME/model).
    #[arg(long)]
    model: String,
    /// Labelled data file.
    #[arg(long)]
    data: PathBuf,
    /// Column holding the label.
    #[arg(long, default_value = "label")]
    label_column: String,
    #[command(flatten)]
    data_args: DataArgs,
    /// Write the JSON report here instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Batch size.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    batch_size: usize,
    /// Max length in tokens (default: the one the model was trained with).
    #[arg(long)]
    max_length: Option<usize>,
    /// Also evaluate under input perturbations (typos, casing, punctuation, truncation) and
    /// report accuracy and prediction flips for each.
    #[arg(long)]
    robustness: bool,
    /// Number format of the encoder's linear-layer products: f32, or bf16 (bf16 operands,
    /// f32 sums; on AMX where the CPU has it — faster, results within bf16 rounding).
    #[arg(long, default_value = "f32")]
    precision: tunekit::model::Precision,
}

#[derive(Args)]
struct PredictArgs {
    /// Fine-tuned model directory.
    #[arg(long)]
    model: String,
    /// Input file (CSV/TSV/JSONL with a text column).
    #[arg(long)]
    input: PathBuf,
    /// Output JSONL file (written atomically).
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    data_args: DataArgs,
    /// Batch size.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    batch_size: usize,
    /// Max length in tokens (default: the one the model was trained with).
    #[arg(long)]
    max_length: Option<usize>,
    /// Number format of the encoder's linear-layer products: f32, or bf16 (bf16 operands,
    /// f32 sums; on AMX where the CPU has it — faster, results within bf16 rounding).
    #[arg(long, default_value = "f32")]
    precision: tunekit::model::Precision,
}

#[derive(Args)]
struct EmbedArgs {
    /// Any BERT model directory (or model id in the local HF cache).
    #[arg(long)]
    model: String,
    /// Input file with a text column; without it, one text per line is read from stdin.
    #[arg(long)]
    input: Option<PathBuf>,
    #[command(flatten)]
    data_args: DataArgs,
    /// Output JSONL (default stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Max length in tokens (default: the model's sentence-transformers `max_seq_length`,
    /// else its `tunekit.json`, else `min(model_max_length, max_position_embeddings)`).
    #[arg(long)]
    max_length: Option<usize>,
    /// Pooling: mean, cls, max, mean_sqrt_len or lasttoken (default: the model's
    /// sentence-transformers pooling config, else mean).
    #[arg(long)]
    pooling: Option<tunekit::embed::EmbedPooling>,
    /// Raw pooled vectors: no L2 normalisation even where the model has a Normalize module
    /// (and modules tunekit does not run, e.g. Dense, are skipped instead of refused).
    #[arg(long, visible_alias = "no-normalize")]
    raw: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Fine-tuned model directory.
    #[arg(long)]
    model: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Most inputs per model batch.
    #[arg(long, default_value_t = 32)]
    max_batch_size: usize,
    /// Most tokens per model batch.
    #[arg(long, default_value_t = 16384)]
    max_batch_tokens: usize,
    /// Longest wait (ms) for a batch to fill.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Requests that may wait for the model before new ones get 503.
    #[arg(long, default_value_t = 256)]
    queue_capacity: usize,
    /// Most inputs in one request.
    #[arg(long, default_value_t = 64)]
    max_inputs_per_request: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Reject inputs longer than the model's max length (default: truncate and flag).
    #[arg(long)]
    no_truncate: bool,
    /// Time limit per request in milliseconds.
    #[arg(long, default_value_t = 30000)]
    request_timeout_ms: u64,
    /// Predictions in the drift window.
    #[arg(long, default_value_t = 1000)]
    drift_window: usize,
    /// Number format of the encoder's linear-layer products: f32, or bf16 (bf16 operands,
    /// f32 sums; on AMX where the CPU has it — faster, results within bf16 rounding).
    #[arg(long, default_value = "f32")]
    precision: tunekit::model::Precision,
}

/// An explicit `--device` must be the first of `train.devices` (`--devices`) when the config
/// lists devices: the run lives on that one, and nothing is silently put elsewhere.
fn check_device_flag(flag: Option<DeviceKind>, config: &RunConfig) -> anyhow::Result<()> {
    if let (Some(flag), Some(first)) = (flag, config.train.devices.first())
        && first.parse::<DeviceKind>()? != flag
    {
        return Err(tunekit::Error::Config(format!(
            "--device {flag} differs from train.devices ({}): the run lives on the first of \
             train.devices; drop --device or list {flag} first",
            config.train.devices.join(", ")
        ))
        .into());
    }
    Ok(())
}

/// `tunekit train` / `tunekit distill`: one run, or `--cv K` runs, and the summary.
fn run_training(
    config: RunConfig,
    args: TrainArgs,
    progress: bool,
    device: &burn::tensor::Device,
) -> anyhow::Result<()> {
    let options = TrainOptions {
        run_dir: args.run_dir,
        resume: args.resume,
        progress,
        on_eval: None,
    };
    let run_dir = tunekit::train::run_dir_for(&config, &options);
    if let Some(k) = args.cv {
        let cv = tunekit::train::cross_validate(&config, &options, k, device)?;
        println!("run directory: {}", run_dir.display());
        let show = |label: &str, m: &tunekit::train::MeanStd| {
            let parts: Vec<String> = ["accuracy", "macro_f1"]
                .iter()
                .filter_map(|n| {
                    Some(format!(
                        "{n} {:.4} ± {:.4}",
                        m.mean.get(*n)?,
                        m.std.get(*n)?
                    ))
                })
                .collect();
            println!("{label} {}", parts.join("  "));
        };
        show(&format!("{k}-fold validation:"), &cv.validation);
        if let Some(t) = &cv.test {
            show("test:", t);
        }
        return Ok(());
    }
    let metrics = tunekit::train::train(&config, &options, device)?;
    let fmt = |m: &Option<tunekit::metrics::ClassificationMetrics>| match m {
        Some(m) => format!("accuracy {:.4}  macro-F1 {:.4}", m.accuracy, m.macro_f1),
        None => "n/a".into(),
    };
    println!("run directory: {}", run_dir.display());
    println!(
        "best step:     {}",
        metrics.best_step.map_or("-".into(), |s| s.to_string())
    );
    let scores = |m: &Option<tunekit::task::Scores>| match m {
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect::<Vec<_>>()
            .join("  "),
        None => "n/a".into(),
    };
    if metrics.task.is_classification() {
        println!("validation:    {}", fmt(&metrics.validation));
        println!("test:          {}", fmt(&metrics.test));
    } else {
        println!("validation:    {}", scores(&metrics.validation_scores));
        println!("test:          {}", scores(&metrics.test_scores));
    }
    println!(
        "training:      {} steps in {:.1} s ({:.1} examples/s)",
        metrics.steps, metrics.train_time_s, metrics.train_examples_per_s
    );
    Ok(())
}

/// `tunekit runs list|show|compare`.
fn runs_command(command: RunsCommand) -> anyhow::Result<()> {
    use tunekit::index::{INDEX_FILE, RunIndex, RunRow};
    let (dir, shared) = match &command {
        RunsCommand::List { dir, index, .. }
        | RunsCommand::Show { dir, index, .. }
        | RunsCommand::Compare { dir, index, .. } => (dir.clone(), index.clone()),
        RunsCommand::Push { dir, .. } => (dir.clone(), None),
    };
    let mut index = if let Some(url) = &shared {
        RunsIndex::Shared(tunekit::index_pg::PgRunIndex::open(url)?)
    } else {
        if !dir.join(INDEX_FILE).is_file() {
            return Err(tunekit::Error::Config(format!(
                "{}: no experiment index here (it is written by tunekit train; pass --dir)",
                dir.join(INDEX_FILE).display()
            ))
            .into());
        }
        RunsIndex::Local(RunIndex::open(&dir)?)
    };
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
    let secs = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    let line = |r: &RunRow| {
        format!(
            "{:<24} {:<8} {:<9} {:>8} {:>8} {:>8} {:>8} {:>9}",
            r.name,
            r.kind,
            r.status,
            num(r.outcome.validation_accuracy),
            num(r.outcome.validation_macro_f1),
            num(r.outcome.test_accuracy),
            num(r.outcome.test_macro_f1),
            secs(r.outcome.train_time_s)
        )
    };
    let header = format!(
        "{:<24} {:<8} {:<9} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "run", "kind", "status", "val_acc", "val_f1", "test_acc", "test_f1", "time_s"
    );
    match command {
        RunsCommand::List { sort, json, .. } => {
            let mut rows = index.list()?;
            if let Some(key) = &sort {
                tunekit::index::sort_runs(&mut rows, key)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{header}");
                for r in &rows {
                    println!("{}", line(r));
                }
            }
        }
        RunsCommand::Push { index: url, .. } => {
            let rows = index.list()?;
            let mut shared = tunekit::index_pg::PgRunIndex::open(&url)?;
            for r in &rows {
                shared.upsert(r)?;
            }
            println!(
                "{} runs of {} recorded in {}",
                rows.len(),
                dir.display(),
                shared.location()
            );
        }
        RunsCommand::Show { run, .. } => {
            let r = index.get(&run)?;
            println!("{header}\n{}", line(&r));
            println!("run directory: {}", r.run_dir);
            if let Some(e) = &r.error {
                println!("error: {e}");
            }
            println!("\nconfig:\n{}", r.config);
        }
        RunsCommand::Compare { runs, .. } => {
            let rows: Vec<RunRow> = runs
                .iter()
                .map(|r| index.get(r))
                .collect::<Result<_, _>>()?;
            println!("{header}");
            for r in &rows {
                println!("{}", line(r));
            }
            let configs: Vec<&str> = rows.iter().map(|r| r.config.as_str()).collect();
            let diff = tunekit::index::config_diff(&configs)?;
            println!("\nconfig differences ({} keys):", diff.len());
            for (key, values) in diff {
                let shown: Vec<String> = values
                    .iter()
                    .zip(&rows)
                    .map(|(v, r)| format!("{}={}", r.name, v.as_deref().unwrap_or("(unset)")))
                    .collect();
                println!("  {key}: {}", shown.join("  "));
            }
        }
    }
    Ok(())
}
/// The experiment index `tunekit runs` reads: a runs directory's `index.sqlite`, or the
/// shared one in PostgreSQL (`--index URL`).
enum RunsIndex {
    Local(tunekit::index::RunIndex),
    Shared(tunekit::index_pg::PgRunIndex),
}

impl RunsIndex {
    fn list(&mut self) -> tunekit::Result<Vec<tunekit::index::RunRow>> {
        match self {
            RunsIndex::Local(i) => i.list(),
            RunsIndex::Shared(i) => i.list(),
        }
    }

    fn get(&mut self, run: &str) -> tunekit::Result<tunekit::index::RunRow> {
        match self {
            RunsIndex::Local(i) => i.get(run),
            RunsIndex::Shared(i) => i.get(run),
        }
    }
}

/// `tunekit data check|prepare`.
fn data_command(command: DataCommand) -> anyhow::Result<()> {
    let (config, set) = match &command {
        DataCommand::Check { config, set, .. } | DataCommand::Prepare { config, set, .. } => {
            (config, set)
        }
    };
    let config = RunConfig::load(config, set)?;
    if let DataCommand::Check { json, cv, .. } = command {
        // A dry run of `train`: the same checks, by the same functions, before its first step.
        let check = tunekit::train::check_data(&config, cv)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&check.report)?);
        } else {
            print!("{}", check.text);
        }
        return Ok(());
    }
    let model = tunekit::model::ModelDir::open(&config.model.path)?;
    let tokenizer = tunekit::tokenize::TextTokenizer::for_model(
        &model.tokenizer_path(),
        config.model.max_length,
        &model.config,
    )?;
    let data = tunekit::prep::prepare(&config, Some(&tokenizer))?;
    match command {
        DataCommand::Check { .. } => {}
        DataCommand::Prepare { out, .. } => {
            std::fs::create_dir_all(&out)
                .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", out.display()))?;
            for split in &data.splits {
                let path = out.join(format!("{}.jsonl", split.name));
                tunekit::prep::write_jsonl(&path, &split.examples, &config.data)?;
                println!(
                    "{}: {} examples -> {}",
                    split.name,
                    split.examples.len(),
                    path.display()
                );
            }
            data.report.write(&out)?;
            print!("{}", data.report.to_text());
            println!("report: {}", out.join("data_report.txt").display());
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Architecture, parameters, vocabulary, max length and a training-memory estimate.
    Inspect {
        /// Model directory or model id in the local HF cache.
        dir: String,
        /// Batch size for the memory estimate.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Sequence length for the memory estimate.
        #[arg(long, default_value_t = 128)]
        seq_len: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    allocator::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_message(&err));
            // Bad input (config, data, model files, labels) is exit code 2; engine failures 1.
            let code = match (
                err.downcast_ref::<tunekit::Error>(),
                err.downcast_ref::<tunekit_serve::ServeError>(),
            ) {
                (Some(tunekit::Error::Engine(_)), _) => 1,
                (Some(_), _) | (_, Some(tunekit_serve::ServeError::Model(_))) => 2,
                // A reader's error passed on without the library's wrapper is bad input too.
                _ if err.downcast_ref::<tunekit::data::DataError>().is_some() => 2,
                _ => 1,
            };
            ExitCode::from(code)
        }
    }
}

/// The error and its causes joined with `: `, each cause once: a cause whose text the message
/// already includes (a library error that names its OS error and also returns it as its
/// source) is not repeated.
fn error_message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn prune_command(
    args: PruneArgs,
    progress: bool,
    device: &burn::tensor::Device,
) -> anyhow::Result<()> {
    let opts = tunekit::model::prune::PruneOptions {
        importance: match args.importance {
            ImportanceArg::Magnitude => tunekit::model::prune::Importance::Magnitude,
            ImportanceArg::Taylor => tunekit::model::prune::Importance::Taylor,
        },
        heads: args.heads,
        ffn: args.ffn,
        sparsity: args.sparsity,
        per_layer: args.per_layer,
    };
    if opts.heads == 0.0 && opts.ffn == 0.0 && opts.sparsity.is_none() {
        anyhow::bail!("nothing to prune: give --heads, --ffn and/or --sparsity");
    }
    if args.recover_epochs > 0 {
        tunekit::export::recover::check(opts.sparsity)?;
    }
    let calibration = match &args.calibration {
        Some(path) => Some(
            args.data_args
                .spec(path.clone(), Some(args.label_column.clone()))?,
        ),
        None => None,
    };
    let report = tunekit::export::prune(
        &args.model,
        &opts,
        calibration.as_ref().map(|c| (c, args.calibration_rows)),
        &args.out,
        device,
    )?;
    println!(
        "pruned model: {} — parameters {} → {} ({:.1}% fewer), intermediate size {} → {}, heads removed {:?}, linear-weight sparsity {:.3}",
        args.out.display(),
        report.parameters_before,
        report.parameters_after,
        100.0 * (1.0 - report.parameters_after as f64 / report.parameters_before as f64),
        report.intermediate_size.0,
        report.intermediate_size.1,
        report
            .heads_removed
            .values()
            .map(Vec::len)
            .collect::<Vec<_>>(),
        report.linear_sparsity
    );
    if args.recover_epochs > 0 {
        let recovery = tunekit::export::recover::Recovery {
            epochs: args.recover_epochs,
            config: args.config.clone(),
            progress,
        };
        let m = tunekit::export::recover::recover(&args.model, &args.out, &recovery, device)?;
        println!(
            "recovered model: {} — validation accuracy {}, test accuracy {}",
            args.out.join("recover/model").display(),
            m.validation
                .as_ref()
                .map_or("—".into(), |v| format!("{:.4}", v.accuracy)),
            m.test
                .as_ref()
                .map_or("—".into(), |v| format!("{:.4}", v.accuracy))
        );
    }
    Ok(())
}

/// A count of at least 1 for a flag (clap reports anything else as a usage error naming the
/// flag, exit code 2).
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A TOML string literal (for `--set` values built from paths).
/// `, N dropped for an empty text` when rows were read but not used (never silent).
fn dropped_note(dropped: usize) -> String {
    if dropped == 0 {
        String::new()
    } else {
        format!(", {dropped} dropped for an empty text: no output line for them")
    }
}

fn write_output(path: Option<&PathBuf>, text: &str) -> anyhow::Result<()> {
    match path {
        Some(p) => Ok(tunekit::fsutil::write_atomic(p, text.as_bytes())?),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let device = tunekit::device::device(cli.device.unwrap_or_default())?;
    let progress = !cli.quiet && std::io::stderr().is_terminal();
    match cli.command {
        Command::Distill(args) => {
            let config = RunConfig::load(&args.config, &args.overrides()?)?;
            check_device_flag(cli.device, &config)?;
            if config.distill.is_none() {
                return Err(tunekit::Error::Config(format!(
                    "{}: tunekit distill needs a [distill] section (teacher, temperature, alpha)",
                    args.config.display()
                ))
                .into());
            }
            run_training(config, args, progress, &device)
        }
        Command::Train(args) => {
            let config = RunConfig::load(&args.config, &args.overrides()?)?;
            check_device_flag(cli.device, &config)?;
            if config.distill.is_some() {
                return Err(tunekit::Error::Config(format!(
                    "{}: has a [distill] section: run tunekit distill",
                    args.config.display()
                ))
                .into());
            }
            run_training(config, args, progress, &device)
        }
        Command::Data { command } => data_command(command),
        Command::Runs { command } => runs_command(command),
        Command::Search(args) => commands::search_command(args, &device),
        Command::Export { model, format, out } => {
            let format = match format {
                ExportFormatArg::Hf => tunekit::export::ExportFormat::Hf,
                ExportFormatArg::Onnx => tunekit::export::ExportFormat::Onnx,
            };
            let path = tunekit::export::export(&model, format, &out, &device)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Prune(args) => prune_command(args, progress, &device),
        Command::Quantize { model, out } => commands::quantize_command(model, out, &device),
        Command::CompressReport(args) => commands::compress_report_command(args, &device),
        Command::Report { run_dir } => {
            let path = tunekit::report::write(&run_dir)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Merge { model, out } => {
            let clf = tunekit::predictor::Predictor::load(&model, None, &device)?;
            clf.merge_into(&out)?;
            println!("merged model: {}", out.display());
            Ok(())
        }
        Command::Eval(args) => commands::eval_command(args, &device),
        Command::Generate(args) => generate::generate_command(args, cli.quiet, &device),
        Command::Predict(args) => commands::predict_command(args, progress, &device),
        Command::Embed(args) => commands::embed_command(args, &device),
        Command::Serve(a) => commands::serve_command(a, &device),
        Command::Models {
            command:
                ModelsCommand::Inspect {
                    dir,
                    batch_size,
                    seq_len,
                    json,
                },
        } => {
            let s = tunekit::model::inspect(&dir, batch_size, seq_len)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("directory:        {}", s.dir.display());
                println!(
                    "model type:       {} ({})",
                    s.model_type,
                    s.architectures.join(", ")
                );
                println!("architecture:     {}", s.architecture);
                println!("tokenizer:        {}", s.tokenizer);
                println!("weights:          {}", s.weights_format);
                println!(
                    "parameters:       {} ({:.1} M)",
                    s.parameters,
                    s.parameters as f64 / 1e6
                );
                println!("layers:           {}", s.layers);
                println!(
                    "hidden size:      {} ({} heads, FFN {})",
                    s.hidden_size, s.heads, s.intermediate_size
                );
                println!("vocabulary:       {}", s.vocab_size);
                println!("max length:       {} tokens", s.max_length);
                match &s.labels {
                    Some(l) => println!("labels:           {}", l.join(", ")),
                    None => println!("labels:           none (no classification head)"),
                }
                println!(
                    "training memory:  ~{:.2} GiB (AdamW, f32, batch {} × {} tokens)",
                    s.train_memory_bytes as f64 / (1u64 << 30) as f64,
                    s.batch_size,
                    s.seq_len
                );
            }
            Ok(())
        }
    }
}
