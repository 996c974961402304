//! Inputs at and past the model's limits, through the real binary (issue 16, parts 1, 4, 7):
//! a max length past the position table is refused up front by every command that builds model
//! inputs; longer texts are truncated and counted; a panic inside a run marks the run failed;
//! sentence pairs on a model with one token type; empty input is the same exit-2 error
//! everywhere; and the other panics on user input the audit found (batch size 0, a tokenizer
//! whose ids the model has no rows for).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::*;

/// A line of 600 words: far more tokens than any position table here.
fn long_line() -> String {
    (0..600)
        .map(|i| format!("word{}", i % 50))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Shared fixtures under the test target's temp dir: the tiny classifier (trained once for all
/// tests of this file) and a tiny regression model.
fn shared() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("input_limits");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The tiny model (max_position_embeddings 128), fine-tuned with max_length 64.
        trained_tiny(&dir, 1);
        // A regression task model on the same tiny encoder.
        let rows: String = (0..48)
            .map(|i| format!("sentence number {i} {}\t{}\n", "good ".repeat(i % 4), i % 4))
            .collect();
        let data = dir.join("reg.tsv");
        std::fs::write(&data, format!("text\tscore\n{rows}")).unwrap();
        let cfg = dir.join("reg.toml");
        std::fs::write(
            &cfg,
            format!(
                "[task]\ntype = \"regression\"\n[model]\npath = {model:?}\nmax_length = 32\n[data]\ntrain = {data:?}\nlabel_column = \"score\"\n[train]\nepochs = 1\nbatch_size = 16\nlearning_rate = 1e-3\n[run]\nname = \"reg\"\ndir = {runs:?}\n",
                model = dir.join("tiny-model"),
                runs = dir.join("runs")
            ),
        )
        .unwrap();
        let o = tunekit(&["train", cfg.to_str().unwrap()]);
        assert!(o.status.success(), "regression train: {}", stderr(&o));
        dir
    })
}

fn classifier() -> PathBuf {
    shared().join("runs/tiny/model")
}

fn regression_model() -> PathBuf {
    shared().join("runs/reg/model")
}

/// `tunekit ARGS --quiet` with `input` on stdin.
fn tunekit_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tunekit"))
        .args(args)
        .arg("--quiet")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A copy of a model directory (files only, no subdirectories).
fn copy_model(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    to.to_path_buf()
}

/// Edit a JSON file in place.
fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v = json(path);
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn length_beyond_the_position_table_is_refused_naming_both_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let minilm = minilm();
    let long = long_line();

    // embed: all-MiniLM-L6-v2 has 512 positions.
    let o = tunekit_stdin(
        &[
            "embed",
            "--model",
            minilm.to_str().unwrap(),
            "--max-length",
            "1024",
        ],
        &format!("{long}\n"),
    );
    assert_bad_input(&o, &["1024", "512", "max_position_embeddings"]);
    assert!(stdout(&o).is_empty());

    // predict / eval on the tiny classifier (128 positions), with a longer --max-length.
    let model = classifier();
    let input = d.join("long.tsv");
    std::fs::write(
        &input,
        format!("text\tlabel\n{long}\tpositive\nshort\tnegative\n"),
    )
    .unwrap();
    let out = d.join("pred.jsonl");
    let o = tunekit(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--max-length",
        "200",
    ]);
    assert_bad_input(&o, &["200", "128"]);
    assert!(!out.exists(), "nothing is written");
    let o = tunekit(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        input.to_str().unwrap(),
        "--max-length",
        "200",
    ]);
    assert_bad_input(&o, &["200", "128"]);
    let o = tunekit(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        input.to_str().unwrap(),
        "--max-length",
        "200",
        "--robustness",
    ]);
    assert_bad_input(&o, &["200", "128"]);

    // A task model (regression) too.
    let o = tunekit(&[
        "predict",
        "--model",
        regression_model().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--max-length",
        "200",
    ]);
    assert_bad_input(&o, &["200", "128"]);

    // A model whose tunekit.json claims a max length past its table: every command that
    // loads it refuses it up front (predict, serve, export, compress-report, prune calibration).
    let broken = copy_model(&model, &d.join("broken"));
    edit_json(&broken.join("tunekit.json"), |v| {
        v["max_length"] = 300.into()
    });
    let b = broken.to_str().unwrap();
    let o = tunekit(&[
        "predict",
        "--model",
        b,
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["300", "128"]);
    let o = tunekit(&["serve", "--model", b, "--addr", "127.0.0.1:0"]);
    assert_bad_input(&o, &["300", "128"]);
    let o = tunekit(&[
        "export",
        "--model",
        b,
        "--format",
        "onnx",
        "--out",
        d.join("onnx").to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["300", "128"]);
    let o = tunekit(&["compress-report", b, "--data", input.to_str().unwrap()]);
    assert_bad_input(&o, &["300", "128"]);
    let o = tunekit(&[
        "prune",
        "--model",
        b,
        "--out",
        d.join("pruned").to_str().unwrap(),
        "--heads",
        "0.25",
        "--importance",
        "taylor",
        "--calibration",
        input.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["300", "128"]);

    // train and data check (the config's model.max_length).
    let cfg = tiny_config(d, &shared().join("tiny-model"), "epochs = 1");
    for cmd in ["train", "data"] {
        let mut args = if cmd == "train" {
            vec!["train", cfg.to_str().unwrap()]
        } else {
            vec!["data", "check", cfg.to_str().unwrap()]
        };
        args.extend(["--set", "model.max_length=200"]);
        let o = tunekit(&args);
        assert_bad_input(&o, &["200", "128"]);
    }

    // distill: the student (MiniLM, 512 positions) at max_length 200 is fine, but the
    // teacher (the tiny classifier, 128 positions) cannot take it.
    let dcfg = d.join("distill.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            &format!("path = {:?}", shared().join("tiny-model")),
            &format!("path = {minilm:?}"),
        )
        .replace("max_length = 64", "max_length = 200")
        .replace("name = \"tiny\"", "name = \"distilled\"");
    std::fs::write(
        &dcfg,
        format!("{text}\n[distill]\nteacher = {model:?}\ntemperature = 2.0\nalpha = 0.5\n"),
    )
    .unwrap();
    let o = tunekit(&["distill", dcfg.to_str().unwrap()]);
    assert_bad_input(&o, &["200", "128"]);

    // bench (the benchmark binary): --seq past the table.
    let o = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "--model",
            minilm.to_str().unwrap(),
            "--seq",
            "1024",
            "infer",
        ])
        .output()
        .unwrap();
    assert_bad_input(&o, &["1024", "512"]);
}

#[test]
fn longer_inputs_are_truncated_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let long = long_line();
    let model = classifier();
    let input = d.join("long.tsv");
    std::fs::write(
        &input,
        format!("text\tlabel\n{long}\tpositive\nshort\tnegative\n"),
    )
    .unwrap();

    // embed: one vector per line, and the cut counted.
    let o = tunekit_env(
        &[
            "embed",
            "--model",
            minilm().to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
        &[("RUST_LOG", "info")],
    );
    assert!(o.status.success(), "embed: {}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 2);
    assert!(
        stderr(&o).contains("1 of 2 texts truncated to"),
        "{}",
        stderr(&o)
    );

    // predict: both rows predicted, one truncated to the model's 64 tokens.
    let out = d.join("pred.jsonl");
    let o = tunekit(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "predict: {}", stderr(&o));
    assert!(
        stderr(&o).contains("2 rows predicted") && stderr(&o).contains("1 truncated to 64"),
        "{}",
        stderr(&o)
    );
    assert_eq!(read_jsonl(&out).len(), 2);

    // eval: the report counts it; up to the table's 128 tokens is allowed.
    let o = tunekit(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        input.to_str().unwrap(),
        "--max-length",
        "128",
    ]);
    assert!(o.status.success(), "eval: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["examples"], 2);
    assert_eq!(report["truncated"], 1);
    assert_eq!(report["max_length"], 128);
}

#[test]
fn panic_inside_a_run_marks_it_failed_in_status_and_index() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cfg = tiny_config(d, &shared().join("tiny-model"), "epochs = 1");
    let o = tunekit_env(
        &["train", cfg.to_str().unwrap()],
        &[("TUNEKIT_TEST_PANIC_IN_RUN", "1")],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("panicked"), "{err}");
    let status = json(&d.join("runs/tiny/status.json"));
    assert_eq!(status["status"], "failed", "{status}");
    let message = status["error"].as_str().unwrap();
    assert!(
        message.contains("panicked") && message.contains("test hook"),
        "{message}"
    );
    let o = tunekit(&[
        "runs",
        "list",
        "--dir",
        d.join("runs").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(row["status"], "failed", "{row}");
    assert!(row["finished_at"].is_i64(), "{row}");
    assert!(
        row["error"].as_str().unwrap().contains("test hook"),
        "{row}"
    );
    // A failed run can be replaced by a new one without --resume.
    let o = tunekit(&["train", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&d.join("runs/tiny/status.json"))["status"], "complete");
}

/// all-MiniLM-L6-v2 with a one-row token-type table (`type_vocab_size = 1`, as RoBERTa-style
/// configs have): the config edited and the tensor cut to its first row.
fn one_token_type_minilm(dir: &Path) -> PathBuf {
    let out = dir.join("minilm-one-type");
    std::fs::create_dir_all(&out).unwrap();
    let src = minilm();
    for f in ["tokenizer.json", "config.json"] {
        std::fs::copy(src.join(f), out.join(f)).unwrap();
    }
    edit_json(&out.join("config.json"), |v| {
        v["type_vocab_size"] = 1.into()
    });
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut cut = false;
    let tensors: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let mut shape = view.shape().to_vec();
            let mut data = view.data().to_vec();
            if name.ends_with("token_type_embeddings.weight") {
                assert_eq!(shape[0], 2);
                data.truncate(data.len() / shape[0]);
                shape[0] = 1;
                cut = true;
            }
            (name, shape, view.dtype(), data)
        })
        .collect();
    assert!(cut, "no token_type_embeddings tensor");
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, dt, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    out
}

#[test]
fn sentence_pairs_on_a_one_row_token_type_table_use_type_id_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = one_token_type_minilm(d);
    // Pairs from MR sentences: label `same` when both halves come from the same sentence.
    let text = std::fs::read_to_string(mr("train")).unwrap();
    let sents: Vec<String> = text
        .lines()
        .skip(1)
        .step_by(97)
        .take(48)
        .map(|l| {
            l.split('\t')
                .next()
                .unwrap()
                .split_whitespace()
                .take(8)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let rows: Vec<String> = (0..48)
        .map(|i| {
            let j = if i % 2 == 0 { i } else { (i + 7) % 48 };
            let label = if i % 2 == 0 { "same" } else { "other" };
            format!("{}\t{}\t{label}", sents[i], sents[j])
        })
        .collect();
    let train = d.join("train.tsv");
    let val = d.join("val.tsv");
    std::fs::write(
        &train,
        format!("first\tsecond\tlabel\n{}\n", rows[..32].join("\n")),
    )
    .unwrap();
    std::fs::write(
        &val,
        format!("first\tsecond\tlabel\n{}\n", rows[32..].join("\n")),
    )
    .unwrap();
    let cfg = d.join("pairs.toml");
    std::fs::write(
        &cfg,
        format!(
            "[task]\ntype = \"pair_classification\"\n[model]\npath = {model:?}\nmax_length = 32\n[data]\ntrain = {train:?}\nvalidation = {val:?}\ntext_column = \"first\"\ntext_pair_column = \"second\"\n[train]\nepochs = 1\nbatch_size = 16\nlearning_rate = 1e-4\n[run]\nname = \"pairs\"\ndir = {runs:?}\n",
            runs = d.join("runs")
        ),
    )
    .unwrap();
    let o = tunekit(&["train", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "train on pairs: {}", stderr(&o));
    let m = json(&d.join("runs/pairs/metrics.json"));
    assert!(m["validation"]["accuracy"].is_f64(), "{m}");
    let exported = d.join("runs/pairs/model");
    assert_eq!(json(&exported.join("config.json"))["type_vocab_size"], 1);

    // predict and eval on pairs with the exported model.
    let out = d.join("pred.jsonl");
    let o = tunekit(&[
        "predict",
        "--model",
        exported.to_str().unwrap(),
        "--input",
        val.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--text-column",
        "first",
        "--text-pair-column",
        "second",
    ]);
    assert!(o.status.success(), "predict on pairs: {}", stderr(&o));
    assert_eq!(read_jsonl(&out).len(), 16);
    let o = tunekit(&[
        "eval",
        "--model",
        exported.to_str().unwrap(),
        "--data",
        val.to_str().unwrap(),
        "--text-column",
        "first",
        "--text-pair-column",
        "second",
    ]);
    assert!(o.status.success(), "eval on pairs: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["examples"], 16);
}

#[test]
fn empty_input_is_the_same_exit_2_error_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = classifier();
    let m = model.to_str().unwrap();
    let header_only = d.join("header.tsv");
    std::fs::write(&header_only, "text\tlabel\n").unwrap();
    // Rows whose text is empty: read, then all dropped.
    let blank_texts = d.join("blank.tsv");
    std::fs::write(&blank_texts, "text\tlabel\n\tpositive\n \tnegative\n").unwrap();

    // embed from empty stdin: no output line, exit 2.
    let minilm = minilm();
    for input in ["", "\n  \n"] {
        let o = tunekit_stdin(&["embed", "--model", minilm.to_str().unwrap()], input);
        assert_bad_input(&o, &["<stdin>"]);
        let err = stderr(&o);
        assert!(
            err.contains("no data rows") || err.contains("no input rows left"),
            "{err}"
        );
        assert_eq!(stdout(&o), "", "no output at all");
    }
    for (file, needle) in [
        (&header_only, "no data rows"),
        (&blank_texts, "no input rows left"),
    ] {
        let f = file.to_str().unwrap();
        let o = tunekit(&["embed", "--model", minilm.to_str().unwrap(), "--input", f]);
        assert_bad_input(&o, &[f, needle]);
        assert_eq!(stdout(&o), "");
        let out = d.join("pred.jsonl");
        for model in [m, regression_model().to_str().unwrap()] {
            let o = tunekit(&[
                "predict",
                "--model",
                model,
                "--input",
                f,
                "--output",
                out.to_str().unwrap(),
            ]);
            assert_bad_input(&o, &[f, needle]);
            assert!(!out.exists(), "no output file for empty input");
        }
        let o = tunekit(&["eval", "--model", m, "--data", f]);
        assert_bad_input(&o, &[f, needle]);
        let o = tunekit(&[
            "eval",
            "--model",
            regression_model().to_str().unwrap(),
            "--data",
            f,
            "--label-column",
            "label",
        ]);
        assert_bad_input(&o, &[f]);
        let o = tunekit(&["compress-report", m, "--data", f]);
        assert_bad_input(&o, &[f, needle]);
    }
    // Training data: an empty training file stops the run before the first step.
    let cfg = tiny_config(d, &shared().join("tiny-model"), "epochs = 1");
    let o = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--set",
        &format!("data.train={:?}", header_only.to_str().unwrap()),
    ]);
    assert_bad_input(&o, &[header_only.to_str().unwrap()]);
}

#[test]
fn zero_batch_size_is_a_usage_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.tsv");
    std::fs::write(&input, "text\tlabel\ngood\tpositive\n").unwrap();
    let m = classifier();
    let o = tunekit(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        input.to_str().unwrap(),
        "--batch-size",
        "0",
    ]);
    assert_bad_input(&o, &["--batch-size", "at least 1"]);
    let o = tunekit(&[
        "predict",
        "--model",
        m.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        tmp.path().join("p.jsonl").to_str().unwrap(),
        "--batch-size",
        "0",
    ]);
    assert_bad_input(&o, &["--batch-size", "at least 1"]);
}

#[test]
fn token_ids_past_the_word_embedding_table_are_refused() {
    // A model whose vocabulary is smaller than its tokenizer's: ids past vocab_size have no
    // embedding row.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_model(&tmp.path().join("small-vocab"));
    edit_json(&dir.join("config.json"), |v| v["vocab_size"] = 1000.into());
    let config = tunekit::model::BertConfig::from_file(&dir.join("config.json")).unwrap();
    tunekit::model::weights::write_random_encoder(&config, &dir.join("model.safetensors"), 7)
        .unwrap();
    let o = tunekit_stdin(
        &["embed", "--model", dir.to_str().unwrap()],
        "an ordinary sentence\n",
    );
    assert_bad_input(&o, &["vocab_size 1000", "tokenizer does not belong"]);
}

/// Kind: a max length that leaves no room for text (at most the special tokens a pair gets)
/// is refused up front, before the tokenizers crate's unchecked `max_length - special`
/// wraps and truncates nothing (which let a long line reach the position table again).
#[test]
fn max_length_below_the_special_tokens_is_refused() {
    let minilm = minilm();
    for len in ["1", "2", "3"] {
        let o = tunekit_stdin(
            &[
                "embed",
                "--model",
                minilm.to_str().unwrap(),
                "--max-length",
                len,
            ],
            &"word ".repeat(600),
        );
        assert_bad_input(
            &o,
            &["tokenizer.json", "leaves no room for text", "at least 4"],
        );
    }
    let o = tunekit_stdin(
        &[
            "embed",
            "--model",
            minilm.to_str().unwrap(),
            "--max-length",
            "4",
        ],
        "a fine film\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
}
