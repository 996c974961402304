//! Readers as a user meets them through the CLI: no row merged or lost, explicit quoting,
//! line numbers that match `grep -n`, relative paths explained, each cause printed once, and
//! standard input read by the same rules as files.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// The report's ten-row TSV: line 3 opens a quote that never closes, line 4 has quotes too.
const WOW_TSV: &str = "text\tlabel\nA fine film\tpositive\n\"Wow, what a mess\tnegative\nHe said \"great\" twice\tpositive\nDull\tnegative\nLovely\tpositive\nBoring\tnegative\nSuperb\tpositive\nAwful\tnegative\nGood\tpositive\nBad\tnegative\n";

/// A `data check` config over `train` for the tiny model.
fn config(dir: &Path, train: &str) -> PathBuf {
    let model = tiny_model(&dir.join("tiny-model"));
    let cfg = format!(
        "[model]\npath = {model:?}\nmax_length = 16\n\n[data]\ntrain = {train:?}\n\n[run]\ndir = {:?}\n",
        dir.join("runs")
    );
    let path = dir.join("cfg.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn data_check(cfg: &Path, sets: &[&str]) -> Output {
    let mut args = vec!["data", "check", cfg.to_str().unwrap(), "--json"];
    for s in sets {
        args.extend(["--set", s]);
    }
    tunekit(&args)
}

fn train_rows(out: &Output) -> u64 {
    assert!(out.status.success(), "{}", stderr(out));
    let report: serde_json::Value = serde_json::from_str(&stdout(out)).unwrap();
    let train = report["splits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["split"] == "train")
        .unwrap()
        .clone();
    train["rows_read"].as_u64().unwrap()
}

#[test]
fn reader_never_merges_rows_on_unterminated_quote() {
    let tmp = tempfile::tempdir().unwrap();
    let train = tmp.path().join("wow.tsv");
    std::fs::write(&train, WOW_TSV).unwrap();
    let cfg = config(tmp.path(), train.to_str().unwrap());
    // TSV has no quoting (IANA): ten rows in, ten rows read.
    assert_eq!(train_rows(&data_check(&cfg, &[])), 10);
    // With RFC 4180 quoting asked for, the unbalanced quote stops the run at its line.
    assert_bad_input(
        &data_check(&cfg, &["data.quoting=\"rfc4180\""]),
        &[
            "wow.tsv line 3 (record 2)",
            "opened on line 3",
            "data.quoting",
        ],
    );
    // The same rows as CSV, where quoting is on by default: an error, never 9 rows.
    let csv = tmp.path().join("wow.csv");
    std::fs::write(&csv, WOW_TSV.replace('\t', ",")).unwrap();
    let cfg = config(tmp.path(), csv.to_str().unwrap());
    assert_bad_input(&data_check(&cfg, &[]), &["wow.csv line 3 (record 2)"]);
    // With quoting off, the comma inside the text gives line 3 a third field: an error too.
    assert_bad_input(
        &data_check(&cfg, &["data.quoting=\"none\""]),
        &["wow.csv line 3 (record 2): expected 2 fields (text, label), found 3"],
    );
    // An unknown mode is a config error naming the choices.
    assert_bad_input(
        &data_check(&cfg, &["data.quoting=\"smart\""]),
        &["quoting", "rfc4180"],
    );
}

#[test]
fn line_numbers_match_grep_and_name_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    // A lone CR inside a quoted field (line 3) is not a line break for grep or editors; the
    // short row is on grep's line 5, the 4th record.
    let train = tmp.path().join("cr.csv");
    std::fs::write(
        &train,
        "text,label\nfirst,a\n\"one\rtwo\",b\nthree,a\nfour\nfive,b\n",
    )
    .unwrap();
    let grep = Command::new("grep")
        .args(["-n", "^four$"])
        .arg(&train)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&grep.stdout).trim(), "5:four");
    let cfg = config(tmp.path(), train.to_str().unwrap());
    assert_bad_input(
        &data_check(&cfg, &[]),
        &["cr.csv line 5 (record 4): expected 2 fields (text, label), found 1"],
    );
    // JSONL: blank lines count as lines, not records.
    let j = tmp.path().join("bad.jsonl");
    std::fs::write(
        &j,
        "{\"text\": \"a\", \"label\": \"x\"}\n\n{\"text\": \"b\", \"label\": \"y\"}\n{\"text\": 3, \"label\": \"x\"}\n",
    )
    .unwrap();
    let cfg = config(tmp.path(), j.to_str().unwrap());
    assert_bad_input(
        &data_check(&cfg, &[]),
        &["bad.jsonl line 4 (record 3): field `text` must be a string"],
    );
}

/// `tunekit ARGS --quiet` run in `dir`.
fn tunekit_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tunekit"))
        .args(args)
        .arg("--quiet")
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn missing_relative_path_names_the_directory_and_each_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "data/train.tsv");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let o = tunekit_in(&elsewhere, &["data", "check", cfg.to_str().unwrap()]);
    let cwd = elsewhere.canonicalize().unwrap();
    assert_bad_input(
        &o,
        &[
            "data/train.tsv",
            &format!("relative to the working directory {}", cwd.display()),
        ],
    );
    let err = stderr(&o);
    // "No such file or directory (os error 2)" once, not twice.
    let reason = "No such file or directory";
    assert_eq!(err.matches(reason).count(), 1, "{err}");
}

fn embed_stdin(model: &Path, input: &[u8], extra: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tunekit"))
        .args(["embed", "--model", model.to_str().unwrap(), "--quiet"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn stdin_input_follows_the_file_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny"));
    // BOM and CRLF are not part of the texts; the blank line is skipped.
    let o = embed_stdin(&model, b"\xEF\xBB\xBFhello\r\n\r\nworld\r\n", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let texts: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(texts, ["hello", "world"]);
    // Bytes that are not UTF-8 name the line, as in a file; --encoding reads them.
    let latin = b"fine\ncaf\xE9 au lait\n";
    assert_bad_input(
        &embed_stdin(&model, latin, &[]),
        &["<stdin> line 2 (record 2): invalid UTF-8", "data.encoding"],
    );
    let o = embed_stdin(&model, latin, &["--encoding", "latin-1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("caf\u{e9} au lait"), "{}", stdout(&o));
}

/// Kind: no silently lost row in `predict` and `embed`. A row whose text is empty gets no
/// output line; the summary says how many, so output lines + dropped = rows in the file.
#[test]
fn predict_and_embed_count_rows_dropped_for_an_empty_text() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = trained_tiny(d, 1);
    let input = d.join("in.tsv");
    // The blank line 3 is no record (as in pandas); line 5 is a record with an empty text.
    std::fs::write(&input, "text\na fine film\n\nit drags\n \n").unwrap();
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
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_jsonl(&out).len(), 2);
    assert!(
        stderr(&o).contains("2 rows predicted")
            && stderr(&o).contains("1 dropped for an empty text"),
        "{}",
        stderr(&o)
    );
    let o = tunekit(&[
        "embed",
        "--model",
        minilm().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 2);
    assert!(
        stderr(&o).contains("2 texts embedded")
            && stderr(&o).contains("1 dropped for an empty text"),
        "{}",
        stderr(&o)
    );
}
