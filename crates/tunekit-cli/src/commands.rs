//! The bodies of `tunekit`'s commands that do more than one library call: each turns its
//! parsed flags into the library's request, calls it, and prints the result. Decisions
//! (which task a model is, how runs sort, what a file holds) are the library's.

use std::path::PathBuf;

use anyhow::Context;

use super::{
    CompressReportArgs, EmbedArgs, EvalArgs, PredictArgs, SearchArgs, ServeArgs, dropped_note,
    write_output,
};

/// `tunekit search`: run the study, print its table and where its files are.
pub(crate) fn search_command(
    args: SearchArgs,
    device: &burn::tensor::Device,
) -> anyhow::Result<()> {
    let cfg = tunekit::search::study::SearchConfig::load(&args.config, &args.set)?;
    let options = tunekit::search::study::SearchOptions {
        dir: args.run_dir,
        jobs: args.jobs,
        storage: args.storage,
        study: args.study,
    };
    let results = tunekit::search::study::search(&cfg, &options, device)?;
    println!("{}", tunekit::search::study::results_table(&cfg, &results));
    let dir = options
        .dir
        .unwrap_or_else(|| cfg.base.run.dir.join(&cfg.base.run.name));
    println!(
        "results: {}/results.md, best config: {}/best.toml, report: {}/report.html",
        dir.display(),
        dir.display(),
        dir.display()
    );
    if results.best_trial.is_none() {
        anyhow::bail!("no trial completed (see {}/results.md)", dir.display());
    }
    Ok(())
}

/// `tunekit quantize`: write the int8 model and say how much smaller it is.
pub(crate) fn quantize_command(
    model: String,
    out: PathBuf,
    device: &burn::tensor::Device,
) -> anyhow::Result<()> {
    let r = tunekit::export::quantize(&model, &out, device)?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "int8 model: {} — {} linear layers, {} int8 weights, {} f32 parameters; weights file {:.1} MiB → {:.1} MiB",
        out.display(),
        r.linear_layers,
        r.int8_parameters,
        r.f32_parameters,
        mib(r.size_before_bytes),
        mib(r.size_after_bytes)
    );
    println!(
        "compare speed and accuracy: tunekit compress-report {model} {} --data TEST_FILE",
        out.display()
    );
    Ok(())
}

/// `tunekit compress-report`: size, latency and accuracy of each model.
pub(crate) fn compress_report_command(
    args: CompressReportArgs,
    device: &burn::tensor::Device,
) -> anyhow::Result<()> {
    let spec = args.data_args.spec(args.data, Some(args.label_column))?;
    let mut rows = Vec::new();
    for m in &args.models {
        eprintln!("measuring {m}");
        rows.push(tunekit::export::compare::measure(
            m,
            &spec,
            args.latency_inputs,
            device,
        )?);
    }
    let table = tunekit::export::compare::table(&rows);
    if let Some(out) = &args.output {
        tunekit::fsutil::write_atomic(out, table.as_bytes())?;
        tunekit::fsutil::write_json(&out.with_extension("json"), &rows)?;
    }
    print!("{table}");
    Ok(())
}

/// `tunekit eval`: scores on a labelled file (and robustness when asked).
pub(crate) fn eval_command(args: EvalArgs, device: &burn::tensor::Device) -> anyhow::Result<()> {
    let clf = tunekit::predictor::Predictor::load(&args.model, args.max_length, device)?
        .with_precision(args.precision)?;
    let spec = args.data_args.spec(args.data, Some(args.label_column))?;
    let report = clf.evaluate(&spec, args.batch_size, args.robustness)?;
    if let tunekit::predictor::Evaluation::Classification(r) = &report
        && let Some(perturbed) = &r.robustness
    {
        eprintln!(
            "clean accuracy {:.4}; under perturbation:",
            r.metrics.accuracy
        );
        for p in perturbed {
            eprintln!(
                "  {:<24} accuracy {:.4} ({:+.4}), flipped {:.1}% ({} inputs changed)",
                format!("{:?}", p.perturbation),
                p.accuracy,
                p.accuracy_delta,
                100.0 * p.flip_rate,
                p.changed
            );
        }
    }
    if report.truncated() > 0 {
        tracing::info!(
            "{} of {} examples truncated to {} tokens",
            report.truncated(),
            report.examples(),
            clf.tokenizer.max_length()
        );
    }
    write_output(
        args.output.as_ref(),
        &serde_json::to_string_pretty(&report)?,
    )
}

/// `tunekit predict`: stream predictions to JSONL.
pub(crate) fn predict_command(
    args: PredictArgs,
    progress: bool,
    device: &burn::tensor::Device,
) -> anyhow::Result<()> {
    let clf = tunekit::predictor::Predictor::load(&args.model, args.max_length, device)?
        .with_precision(args.precision)?;
    // For CoNLL input (token classification) the spec carries only the encoding options.
    let spec = args.data_args.spec(args.input, None)?;
    let bar = if progress {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    let summary = clf.predict_file(&spec, &args.output, args.batch_size, |n| {
        bar.set_message(format!("{n} rows predicted"));
        bar.tick();
    })?;
    bar.finish_and_clear();
    let unit = if clf.kind().is_classification() {
        "rows"
    } else {
        "inputs"
    };
    eprintln!(
        "{} {unit} predicted -> {} ({} truncated to {} tokens){}",
        summary.rows,
        args.output.display(),
        summary.truncated,
        clf.tokenizer.max_length(),
        dropped_note(summary.dropped_empty_text)
    );
    Ok(())
}

/// `tunekit embed`: sentence embeddings of a file's texts or stdin's lines.
pub(crate) fn embed_command(args: EmbedArgs, device: &burn::tensor::Device) -> anyhow::Result<()> {
    // Rows (or stdin lines of only whitespace) with an empty text: no vector for them.
    let dropped;
    let texts: Vec<String> = match &args.input {
        Some(path) => {
            let spec = args.data_args.spec(path.clone(), None)?;
            let (examples, read) =
                tunekit::data::read_examples(&spec).map_err(tunekit::Error::from)?;
            tunekit::infer::require_input(examples.len(), &read, path)?;
            dropped = read.empty_text_dropped;
            examples.into_iter().map(|e| e.text).collect()
        }
        None => {
            // One text per line, read with the file readers' rules (BOM, CRLF,
            // encoding, errors naming the line).
            let (examples, read) = tunekit::data::read_lines(
                std::io::stdin().lock(),
                std::path::Path::new("<stdin>"),
                args.data_args.encoding,
                args.data_args.replace_invalid,
            )
            .map_err(tunekit::Error::from)?;
            // The empty-input rule of every command (README, "Input limits").
            tunekit::infer::require_input(examples.len(), &read, std::path::Path::new("<stdin>"))?;
            dropped = read.empty_text_dropped;
            examples.into_iter().map(|e| e.text).collect()
        }
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let options = tunekit::embed::EmbedOptions {
        max_length: args.max_length,
        pooling: args.pooling,
        raw: args.raw,
    };
    let emb = tunekit::infer::embed_texts(&args.model, &refs, &options, device)?;
    eprintln!(
        "{} texts embedded: {} pooling, {}, max length {} ({} truncated{}); {}",
        emb.vectors.len(),
        emb.config.pooling.name(),
        if emb.config.normalize {
            "L2-normalised"
        } else {
            "not normalised"
        },
        emb.config.max_length,
        emb.truncated,
        dropped_note(dropped),
        emb.config.source
    );
    let mut out = String::new();
    for (t, v) in texts.iter().zip(emb.vectors) {
        out.push_str(&serde_json::json!({"text": t, "embedding": v}).to_string());
        out.push('\n');
    }
    write_output(args.output.as_ref(), out.trim_end())
}

/// `tunekit serve`: the HTTP server until a shutdown signal.
pub(crate) fn serve_command(a: ServeArgs, device: &burn::tensor::Device) -> anyhow::Result<()> {
    let config = tunekit_serve::ServeConfig {
        addr: a.addr,
        max_batch_size: a.max_batch_size.max(1),
        max_batch_tokens: a.max_batch_tokens.max(1),
        max_wait: std::time::Duration::from_millis(a.max_wait_ms),
        queue_capacity: a.queue_capacity.max(1),
        max_inputs_per_request: a.max_inputs_per_request.max(1),
        max_body_bytes: a.max_body_bytes,
        truncate: !a.no_truncate,
        request_timeout: std::time::Duration::from_millis(a.request_timeout_ms),
        drift_window: a.drift_window,
        precision: a.precision,
        device: device.clone(),
    };
    let state = tunekit_serve::load(&a.model, config)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(tunekit_serve::serve(
        state,
        tunekit_serve::shutdown_signal(),
    ))?;
    Ok(())
}
