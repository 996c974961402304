//! What the data mean, end to end through the real binary (issue 16): empty multilabel label
//! sets are examples, `--cv` refuses classes too small for its folds, `data check` is a dry
//! run of `train`, practitioners' warnings (unknown tokens, collapsed predictions), and data
//! reports that tell the truth when tunekit carves the splits itself.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// The first `n` of 400 MR training sentences (text only) spread over the file, at most 12
/// words: one fixed pool, so `sentences(a + b)[a..]` never repeats a sentence of
/// `sentences(a)` (rows of different splits never leak into each other by construction).
fn sentences(n: usize) -> Vec<String> {
    const POOL: usize = 400;
    assert!(n <= POOL, "at most {POOL} sentences");
    let text = std::fs::read_to_string(mr("train")).unwrap();
    let all: Vec<&str> = text.lines().skip(1).collect();
    let step = all.len() / POOL;
    (0..n)
        .map(|i| {
            let t = all[i * step].split('\t').next().unwrap();
            t.split_whitespace().take(12).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

fn write_tsv(path: &Path, header: &str, rows: &[String]) -> PathBuf {
    std::fs::write(path, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
    path.to_path_buf()
}

/// A run config on `model` with `[task]`, `[data]` and extra `[train]` lines.
fn config(dir: &Path, model: &Path, task: &str, data: &str, train_extra: &str) -> PathBuf {
    let cfg = format!(
        "[task]\n{task}\n\n[model]\npath = {model:?}\nmax_length = 48\n\n[data]\n{data}\n\n[train]\nbatch_size = 16\nlearning_rate = 1e-3\nwarmup_ratio = 0.0\nseed = 5\nepochs = 1\n{train_extra}\n\n[run]\nname = \"sem\"\ndir = {runs:?}\n",
        runs = dir.join("runs")
    );
    let path = dir.join("sem.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Rows of `n` sentences with a keyword label set; every third row has an empty label cell.
fn multilabel_rows(n: usize, offset: usize) -> Vec<String> {
    let base = sentences(n + offset);
    debug_assert_eq!(base.len(), n + offset);
    (0..n)
        .map(|i| {
            let text = &base[offset + i];
            match i % 3 {
                0 => format!("{text} cat\tanimal"),
                1 => format!("{text} soup rain\tfood,weather"),
                _ => format!("{text}\t"),
            }
        })
        .collect()
}

#[test]
fn multilabel_empty_label_cell_is_the_empty_label_set() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(&d.join("tiny"));
    let train = write_tsv(&d.join("train.tsv"), "text\tlabel", &multilabel_rows(60, 0));
    let val = write_tsv(
        &d.join("validation.tsv"),
        "text\tlabel",
        &multilabel_rows(30, 60),
    );
    let test = write_tsv(&d.join("test.tsv"), "text\tlabel", &multilabel_rows(30, 90));
    let cfg = config(
        d,
        &model,
        "type = \"multilabel\"\nlabel_separator = \",\"",
        &format!("train = {train:?}\nvalidation = {val:?}\ntest = {test:?}"),
        "metric = \"micro_f1\"",
    );
    let run = d.join("run");
    let out = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "train: {}", stderr(&out));
    let report = json(&run.join("data_report.json"));
    for (sp, n) in report["splits"]
        .as_array()
        .unwrap()
        .iter()
        .zip([60, 30, 30])
    {
        assert_eq!(sp["rows_read"], n, "{sp}");
        assert_eq!(sp["examples"], n, "every row kept: {sp}");
        assert!(
            sp["dropped"].get("empty_label").is_none(),
            "no row dropped as empty label: {sp}"
        );
        assert_eq!(sp["empty_label_sets"], n / 3, "{sp}");
        assert_eq!(sp["label_counts"]["(no labels)"], n / 3, "{sp}");
    }
    let m = json(&run.join("metrics.json"));
    assert_eq!(m["evaluated_examples"]["test"], 30, "{m}");
    assert_eq!(m["evaluated_examples"]["validation"], 30, "{m}");
    // The reported micro-F1 is the one over all 30 test rows, empty sets included.
    let preds = lines(&run.join("predictions/test.jsonl"));
    assert_eq!(preds.len(), 30);
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    let mut empty_gold = 0;
    for p in &preds {
        let gold: Vec<&str> = p["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let pred: Vec<&str> = p["predicted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        empty_gold += usize::from(gold.is_empty());
        tp += pred.iter().filter(|l| gold.contains(l)).count();
        fp += pred.iter().filter(|l| !gold.contains(l)).count();
        fn_ += gold.iter().filter(|l| !pred.contains(l)).count();
    }
    assert_eq!(empty_gold, 10);
    let micro = if 2 * tp + fp + fn_ == 0 {
        0.0
    } else {
        2.0 * tp as f64 / (2 * tp + fp + fn_) as f64
    };
    let reported = m["test_scores"]["micro_f1"].as_f64().unwrap();
    assert!(
        (micro - reported).abs() < 1e-9,
        "micro-F1 over all rows {micro} vs reported {reported}"
    );
    // `tunekit eval` scores every row of the file too.
    let eval_json = d.join("eval.json");
    let out = tunekit(&[
        "eval",
        "--model",
        run.join("model").to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--output",
        eval_json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "eval: {}", stderr(&out));
    let e = json(&eval_json);
    assert_eq!(e["examples"], 30, "{e}");
    let got = e["scores"]["micro_f1"].as_f64().unwrap();
    assert!(
        (got - reported).abs() < 1e-5,
        "eval {got} vs run {reported}"
    );
}

/// `n` classification rows `text<TAB>label` from MR sentences, labels cycling through `labels`.
fn class_rows(n: usize, offset: usize, labels: &[&str]) -> Vec<String> {
    sentences(n + offset)[offset..]
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{t}\t{}", labels[i % labels.len()]))
        .collect()
}

fn relabel(rows: &mut [String], label: &str) {
    for r in rows {
        let text = r.split('\t').next().unwrap().to_string();
        *r = format!("{text}\t{label}");
    }
}

#[test]
fn cv_refuses_a_class_with_fewer_members_than_folds_before_the_first_fold() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(&d.join("tiny"));
    let mut rows = class_rows(42, 0, &["pos", "neg"]);
    relabel(&mut rows[40..], "rare");
    let train = write_tsv(&d.join("train.tsv"), "text\tlabel", &rows);
    let cfg = config(d, &model, "", &format!("train = {train:?}"), "");
    let run = d.join("runs/cv");
    let out = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--cv",
        "3",
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert_bad_input(&out, &["--cv 3", "\"rare\" has 2 rows", "train.tsv"]);
    assert!(
        !run.join("fold-1").exists(),
        "refused before the first fold trained"
    );
    // `data check --cv 3` refuses the same way; `--cv 2` passes.
    let out = tunekit(&["data", "check", cfg.to_str().unwrap(), "--cv", "3"]);
    assert_bad_input(&out, &["--cv 3", "\"rare\" has 2 rows"]);
    let out = tunekit(&["data", "check", cfg.to_str().unwrap(), "--cv", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn data_check_reports_classes_too_small_for_a_split() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(&d.join("tiny"));
    let mut rows = class_rows(61, 0, &["pos", "neg"]);
    relabel(&mut rows[60..], "rare");
    let train = write_tsv(&d.join("train.tsv"), "text\tlabel", &rows);
    let cfg = config(
        d,
        &model,
        "",
        &format!("train = {train:?}\n[data.split]\nvalidation = 0.2\ntest = 0.2"),
        "",
    );
    let out = tunekit(&["data", "check", cfg.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings: {report}"))
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    for split in ["validation", "test"] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(split) && w.contains("\"rare\" (1 in train)")),
            "{split}: {warnings:?}"
        );
    }
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("single row of class \"rare\"")),
        "{warnings:?}"
    );
    let text = stdout(&tunekit(&["data", "check", cfg.to_str().unwrap()]));
    assert!(
        text.contains("warning: validation has no row of class \"rare\""),
        "{text}"
    );
}

/// Runs `data check` and `train` on one config: both must refuse with exit 2 and the same
/// message.
fn check_and_train_refuse_alike(cfg: &Path, run: &Path, needles: &[&str]) {
    let check = tunekit(&["data", "check", cfg.to_str().unwrap()]);
    assert_bad_input(&check, needles);
    let train = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert_bad_input(&train, needles);
    let first_error = |o: &std::process::Output| {
        stderr(o)
            .lines()
            .find(|l| l.starts_with("error:"))
            .map(String::from)
            .unwrap_or_default()
    };
    assert_eq!(first_error(&check), first_error(&train));
}

#[test]
fn data_check_is_a_dry_run_of_train_for_every_task() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(&d.join("tiny"));
    // Classification: a test label the training data never had.
    let train = write_tsv(
        &d.join("train.tsv"),
        "text\tlabel",
        &class_rows(20, 0, &["pos", "neg"]),
    );
    let test = write_tsv(
        &d.join("test.tsv"),
        "text\tlabel",
        &class_rows(6, 20, &["pos", "neutral"]),
    );
    let data = format!("train = {train:?}\ntest = {test:?}");
    let cfg = config(d, &model, "", &data, "");
    check_and_train_refuse_alike(&cfg, &d.join("r1"), &["test.tsv", "neutral"]);
    // Pair classification: the same for pairs.
    let pair_rows = |n: usize, off: usize, labels: &[&str]| -> Vec<String> {
        class_rows(n, off, labels)
            .into_iter()
            .map(|r| {
                let (t, l) = r.split_once('\t').unwrap();
                format!("{t}\tand {t}\t{l}")
            })
            .collect()
    };
    let ptrain = write_tsv(
        &d.join("ptrain.tsv"),
        "text\tpair\tlabel",
        &pair_rows(20, 0, &["same", "other"]),
    );
    let ptest = write_tsv(
        &d.join("ptest.tsv"),
        "text\tpair\tlabel",
        &pair_rows(6, 20, &["same", "odd"]),
    );
    let cfg = config(
        d,
        &model,
        "type = \"pair_classification\"",
        &format!("train = {ptrain:?}\ntest = {ptest:?}\ntext_pair_column = \"pair\""),
        "",
    );
    check_and_train_refuse_alike(&cfg, &d.join("r2"), &["ptest.tsv", "odd"]);
    // Multilabel: a validation label the training data never had.
    let mtrain = write_tsv(
        &d.join("mtrain.tsv"),
        "text\tlabel",
        &multilabel_rows(12, 0),
    );
    let mval = write_tsv(
        &d.join("mval.tsv"),
        "text\tlabel",
        &["a text\tanimal,sports".to_string(), "b text\tfood".into()],
    );
    let cfg = config(
        d,
        &model,
        "type = \"multilabel\"",
        &format!("train = {mtrain:?}\nvalidation = {mval:?}"),
        "metric = \"micro_f1\"",
    );
    check_and_train_refuse_alike(&cfg, &d.join("r3"), &["mval.tsv", "sports"]);
    // Regression: a target that is not a number.
    let rtrain = write_tsv(
        &d.join("rtrain.tsv"),
        "text\tlabel",
        &[
            "one\t1.5".to_string(),
            "two\t2.5".into(),
            "three\tmany".into(),
        ],
    );
    let cfg = config(
        d,
        &model,
        "type = \"regression\"",
        &format!("train = {rtrain:?}"),
        "metric = \"mse\"",
    );
    check_and_train_refuse_alike(&cfg, &d.join("r4"), &["rtrain.tsv", "many"]);
    // Token classification: a test tag the training data never had.
    let ntrain = d.join("ntrain.conll");
    std::fs::write(
        &ntrain,
        "Maria\tB-PER\nworks\tO\n\nOslo\tB-LOC\nrains\tO\n\n",
    )
    .unwrap();
    let ntest = d.join("ntest.conll");
    std::fs::write(&ntest, "Acme\tB-ORG\nsells\tO\n\n").unwrap();
    let cfg = config(
        d,
        &model,
        "type = \"token_classification\"",
        &format!("train = {ntrain:?}\ntest = {ntest:?}\nformat = \"conll\""),
        "metric = \"f1\"",
    );
    check_and_train_refuse_alike(&cfg, &d.join("r5"), &["ntest.conll", "B-ORG"]);
    // Embedding: in-batch negatives need two pairs.
    let etrain = write_tsv(
        &d.join("etrain.tsv"),
        "text\tpositive",
        &["a question\tits answer".to_string()],
    );
    let cfg = config(
        d,
        &model,
        "type = \"embedding\"",
        &format!("train = {etrain:?}\ntext_pair_column = \"positive\""),
        "metric = \"mrr\"",
    );
    check_and_train_refuse_alike(&cfg, &d.join("r6"), &["etrain.tsv", "2 pairs"]);
    // A file without such problems passes.
    let cfg = config(d, &model, "", &format!("train = {train:?}"), "");
    let out = tunekit(&["data", "check", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `n` words of Ethiopic script, which MiniLM's vocabulary cannot spell (each is `[UNK]`).
fn ethiopic_words(n: usize, offset: usize) -> Vec<String> {
    (offset..offset + n)
        .map(|i| {
            [i % 30, (i / 30) % 30, 7 + i % 11]
                .iter()
                .map(|k| char::from_u32(0x1200 + 8 * *k as u32).unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn unknown_token_rate_is_reported_per_split_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(&d.join("tiny"));
    let english = class_rows(20, 0, &["pos", "neg"]);
    let foreign: Vec<String> = ethiopic_words(20, 0)
        .into_iter()
        .enumerate()
        .map(|(i, w)| format!("{w} {w}\t{}", ["pos", "neg"][i % 2]))
        .collect();
    let train = write_tsv(&d.join("train.tsv"), "text\tlabel", &english);
    let test = write_tsv(&d.join("test.tsv"), "text\tlabel", &foreign);
    let cfg = config(
        d,
        &model,
        "",
        &format!("train = {train:?}\ntest = {test:?}"),
        "",
    );
    let out = tunekit(&["data", "check", cfg.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let splits = report["splits"].as_array().unwrap();
    let rate = |i: usize| splits[i]["unknown_tokens"]["rate"].as_f64().unwrap();
    assert!(rate(0) < 0.05, "{}", splits[0]);
    assert_eq!(rate(1), 1.0, "{}", splits[1]);
    assert_eq!(splits[1]["unknown_tokens"]["unknown"], 40);
    let warnings = report["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = warnings[0].as_str().unwrap();
    assert!(
        w.starts_with("test: 100.0%") && w.contains("over 5%"),
        "{w}"
    );
    let text = stdout(&tunekit(&["data", "check", cfg.to_str().unwrap()]));
    assert!(
        text.contains("unknown tokens: 40 of 40 word pieces"),
        "{text}"
    );
    assert!(text.contains("warning: test: 100.0%"), "{text}");
}

#[test]
fn collapsed_prediction_distribution_is_flagged_and_predictions_name_their_labels() {
    // Texts the vocabulary cannot spell all encode as `[CLS] [UNK] [SEP]`: the model must
    // give them one prediction, though half the rows are of each class.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(&d.join("tiny"));
    let rows = |n: usize, off: usize| -> Vec<String> {
        ethiopic_words(n, off)
            .into_iter()
            .enumerate()
            .map(|(i, w)| format!("{w}\t{}", ["pos", "neg"][i % 2]))
            .collect()
    };
    let mut train_rows = rows(40, 0);
    // Some rows only differ from the vocabulary in spacing: counted by cleaning.
    train_rows.extend(
        class_rows(8, 0, &["pos", "neg"])
            .into_iter()
            .map(|r| format!("  {}", r.replacen(' ', "   ", 1))),
    );
    let train = write_tsv(&d.join("train.tsv"), "text\tlabel", &train_rows);
    let val = write_tsv(&d.join("validation.tsv"), "text\tlabel", &rows(20, 100));
    let test = write_tsv(&d.join("test.tsv"), "text\tlabel", &rows(20, 200));
    let cfg = config(
        d,
        &model,
        "",
        &format!("train = {train:?}\nvalidation = {val:?}\ntest = {test:?}"),
        "",
    );
    let run = d.join("run");
    let out = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "train: {}", stderr(&out));
    let m = json(&run.join("metrics.json"));
    let warnings: Vec<&str> = m["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings in metrics.json: {m}"))
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("test: the model predicts") && w.contains("20 of 20 rows")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("collapsed")),
        "{warnings:?}"
    );
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(
        html.contains("id=\"warnings\""),
        "report.html has no warnings box"
    );
    assert!(html.contains("20 of 20 rows"));
    let card = std::fs::read_to_string(run.join("model/README.md")).unwrap();
    assert!(card.contains("## Warnings"), "{card}");
    assert!(card.contains("collapsed"), "{card}");
    assert!(
        card.contains("unknown token"),
        "the data warning reaches the card: {card}"
    );
    // predictions/*.jsonl name the labels (and keep the ids the report reads).
    let preds = lines(&run.join("predictions/test.jsonl"));
    assert_eq!(preds.len(), 20);
    let labels = m["labels"].as_array().unwrap();
    for p in &preds {
        let id = p["label"].as_u64().unwrap() as usize;
        assert_eq!(p["label_name"], labels[id], "{p}");
        let id = p["predicted"].as_u64().unwrap() as usize;
        assert_eq!(p["predicted_name"], labels[id], "{p}");
    }
    // report.html's data section shows unknown tokens and cleaning counts per split.
    let data = &html[html.find("id=\"data-splits\"").unwrap()..];
    assert!(data.contains("undecodable bytes replaced"), "{data}");
    assert!(data.contains("whitespace 8"), "{data}");
    assert!(data.contains("20 of 20 (100.00%)"), "{data}");
}

fn data_check_json(cfg: &Path) -> serde_json::Value {
    let out = tunekit(&["data", "check", cfg.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn carved_splits_count_decode_replacements_and_cleaning_in_their_own_split() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(&d.join("tiny"));
    // 120 distinct rows: every third has an undecodable byte, every fourth extra spaces, every
    // fifth an empty label (filled with `fill_missing_label`, its text marked).
    let mut bytes = b"text\tlabel\n".to_vec();
    for (i, t) in sentences(120).iter().enumerate() {
        let mut text = t.clone().into_bytes();
        if i % 3 == 0 {
            text.extend(b" caf\xff");
        }
        if i % 4 == 0 {
            text.extend(b"   and so on");
        }
        if i % 5 == 0 {
            text.extend(b" filledmark");
            bytes.extend(text);
            bytes.extend(b"\t\n");
            continue;
        }
        bytes.extend(text);
        bytes.extend(format!("\t{}\n", ["pos", "neg"][i % 2]).as_bytes());
    }
    let train = d.join("all.tsv");
    std::fs::write(&train, bytes).unwrap();
    let cfg = config(
        d,
        &model,
        "",
        &format!(
            "train = {train:?}\non_decode_error = \"replace\"\nfill_missing_label = \"neg\"\n[data.split]\nvalidation = 0.2\ntest = 0.2"
        ),
        "",
    );
    let out_dir = d.join("prepared");
    let out = tunekit(&[
        "data",
        "prepare",
        cfg.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&out_dir.join("data_report.json"));
    let splits = report["splits"].as_array().unwrap();
    let (mut replaced, mut spaces, mut filled_total) = (0, 0, 0);
    for sp in splits {
        let name = sp["split"].as_str().unwrap();
        let rows = lines(&out_dir.join(format!("{name}.jsonl")));
        assert_eq!(rows.len() as u64, sp["examples"].as_u64().unwrap());
        // Each split counts exactly the replaced rows it holds.
        let with_fffd = rows
            .iter()
            .filter(|r| r["text"].as_str().unwrap().contains('\u{FFFD}'))
            .count() as u64;
        assert_eq!(sp["decode_replaced"], with_fffd, "{name}: {sp}");
        assert!(with_fffd > 0, "{name} holds replaced rows");
        assert!(
            sp["cleaning"]["whitespace_collapsed"].as_u64().unwrap() > 0,
            "{name}"
        );
        let filled = rows
            .iter()
            .filter(|r| r["text"].as_str().unwrap().contains("filledmark"))
            .count() as u64;
        assert_eq!(sp["labels_filled"], filled, "{name}: {sp}");
        assert!(filled > 0, "{name} holds filled rows");
        filled_total += filled;
        replaced += sp["decode_replaced"].as_u64().unwrap();
        spaces += sp["cleaning"]["whitespace_collapsed"].as_u64().unwrap();
    }
    assert_eq!(replaced, 40);
    assert_eq!(spaces, 30);
    assert_eq!(filled_total, 24);
}

#[test]
fn carved_splits_keep_duplicate_groups_whole_and_their_fractions() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(&d.join("tiny"));
    // 200 distinct texts, each repeated 1 to 7 times (800 rows): duplicate-heavy data.
    let mut rows = Vec::new();
    for (i, t) in sentences(200).iter().enumerate() {
        for _ in 0..1 + i % 7 {
            rows.push(format!("{t}\t{}", ["pos", "neg"][i % 2]));
        }
    }
    let n = rows.len();
    let train = write_tsv(&d.join("dups.tsv"), "text\tlabel", &rows);
    let cfg = config(
        d,
        &model,
        "",
        &format!("train = {train:?}\n[data.split]\nvalidation = 0.1\ntest = 0.1"),
        "",
    );
    let report = data_check_json(&cfg);
    assert!(
        report["dedup"]["leakage"].as_array().unwrap().is_empty(),
        "the split itself must create no leakage: {}",
        report["dedup"]["leakage"]
    );
    let splits = report["splits"].as_array().unwrap();
    let read: u64 = splits
        .iter()
        .map(|s| s["rows_read"].as_u64().unwrap())
        .sum();
    assert_eq!(read as usize, n);
    let kept: Vec<u64> = splits
        .iter()
        .map(|s| s["examples"].as_u64().unwrap())
        .collect();
    assert_eq!(kept.iter().sum::<u64>(), 200, "one row per distinct text");
    assert_eq!(kept, [160, 20, 20], "80/10/10 of the distinct texts");
}

#[test]
fn near_duplicate_short_texts_do_not_leak_across_a_carved_split() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(&d.join("tiny"));
    // Short texts with punctuation variants: one group each, never split apart.
    let mut rows = Vec::new();
    for (i, w) in sentences(60).iter().enumerate() {
        let word: String = w
            .split_whitespace()
            .next()
            .unwrap()
            .chars()
            .take(6)
            .collect();
        let word = format!("{word}{i}");
        let label = ["pos", "neg"][i % 2];
        rows.push(format!("{word}\t{label}"));
        rows.push(format!("{word}!\t{label}"));
    }
    let train = write_tsv(&d.join("short.tsv"), "text\tlabel", &rows);
    let cfg = config(
        d,
        &model,
        "",
        &format!(
            "train = {train:?}\n[data.split]\nvalidation = 0.2\ntest = 0.2\n[data.dedup]\nnear = true"
        ),
        "",
    );
    let report = data_check_json(&cfg);
    assert!(
        report["dedup"]["leakage"].as_array().unwrap().is_empty(),
        "{}",
        report["dedup"]
    );
    let near: u64 = report["dedup"]["near_duplicates"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(near, 60, "every `word!` is a near copy of `word`");
}

/// Kind: `data check` is a dry run of `train` — also of `distill`'s teacher checks (labels and
/// position table), made from the teacher's config without loading its weights.
#[test]
fn data_check_refuses_what_distill_refuses_of_its_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let teacher = trained_tiny(d, 1);
    let model = tiny_model(&d.join("student"));
    let cfg = tiny_config(d, &model, "epochs = 1");
    let with_teacher = |teacher: &Path| {
        let text = std::fs::read_to_string(&cfg).unwrap();
        let path = d.join("distill.toml");
        std::fs::write(&path, format!("{text}\n[distill]\nteacher = {teacher:?}\n")).unwrap();
        path
    };
    // The real teacher passes.
    let ok = tunekit(&["data", "check", with_teacher(&teacher).to_str().unwrap()]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    // A teacher with other labels: refused by data check as by distill.
    let other = d.join("other-teacher");
    std::fs::create_dir_all(&other).unwrap();
    for f in std::fs::read_dir(&teacher).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, other.join(f.file_name().unwrap())).unwrap();
        }
    }
    let mut config = json(&other.join("config.json"));
    config["id2label"] = serde_json::json!({"0": "bad", "1": "good"});
    config["label2id"] = serde_json::json!({"bad": 0, "good": 1});
    std::fs::write(other.join("config.json"), config.to_string()).unwrap();
    let cfg_other = with_teacher(&other);
    let check = tunekit(&["data", "check", cfg_other.to_str().unwrap()]);
    assert_bad_input(&check, &["distill.teacher", "differ"]);
    let run = d.join("distilled");
    let distill = tunekit(&[
        "distill",
        cfg_other.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert_bad_input(&distill, &["distill.teacher", "differ"]);
    // A teacher whose position table is shorter than model.max_length (64).
    config["id2label"] = serde_json::json!({"0": "negative", "1": "positive"});
    config["label2id"] = serde_json::json!({"negative": 0, "positive": 1});
    config["max_position_embeddings"] = serde_json::json!(32);
    std::fs::write(other.join("config.json"), config.to_string()).unwrap();
    let check = tunekit(&["data", "check", cfg_other.to_str().unwrap()]);
    assert_bad_input(&check, &["max_position_embeddings 32", "64"]);
}
