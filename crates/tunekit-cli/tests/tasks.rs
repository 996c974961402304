//! Tasks beyond single-label classification, end to end through the real binary with the real
//! all-MiniLM-L6-v2: each must learn what its data says (scores far from what an untrained
//! or do-nothing model gets), export a model of the right transformers class, and give the same
//! scores again through `tunekit eval` and sensible outputs through `tunekit predict`.
//!
//! The data are real files written here from MR sentences with a planted signal (keywords,
//! counts, names), so a few dozen steps suffice; WNUT-16 itself is read in full to check the
//! CoNLL reader's and aligner's accounting.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A small deterministic generator (tests must not depend on an RNG crate's stream).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// MR training sentences (text only, no tabs), `n` of them spread over the file.
fn sentences(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(mr("train")).unwrap();
    let all: Vec<&str> = text.lines().skip(1).collect();
    let step = all.len() / n;
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

/// A run config for MiniLM on the given files; `task` and `train_extra` go into their sections.
fn config(dir: &Path, task: &str, data: &str, train_extra: &str) -> PathBuf {
    let cfg = format!(
        "[task]\n{task}\n\n[model]\npath = {model:?}\npooling = \"mean\"\nmax_length = 48\n\n[data]\n{data}\n\n[train]\nbatch_size = 16\nlearning_rate = 1e-4\nwarmup_ratio = 0.0\nscheduler = \"constant\"\nseed = 5\n{train_extra}\n\n[run]\nname = \"task\"\ndir = {runs:?}\n",
        model = minilm(),
        runs = dir.join("runs")
    );
    let path = dir.join("task.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn train_ok(cfg: &Path, run: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "train",
        cfg.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = tunekit(&args);
    assert!(out.status.success(), "train: {}", stderr(&out));
    json(&run.join("metrics.json"))
}

/// `tunekit eval` of the exported model on `data` must reproduce the run's test scores.
fn eval_matches_test_scores(model: &Path, data: &Path, m: &serde_json::Value, extra: &[&str]) {
    let out_json = model.parent().unwrap().join("eval.json");
    let mut args = vec![
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--output",
        out_json.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = tunekit(&args);
    assert!(out.status.success(), "eval: {}", stderr(&out));
    let e = json(&out_json);
    let test = m["test_scores"].as_object().unwrap();
    for (k, v) in test {
        let got = e["scores"][k].as_f64().unwrap();
        assert!(
            (got - v.as_f64().unwrap()).abs() < 1e-5,
            "eval {k} {got} vs run's test {v}"
        );
    }
}

const KEYWORDS: [(&str, &[&str]); 3] = [
    ("animal", &["cat", "horse", "dog"]),
    ("weather", &["rain", "snow", "storm"]),
    ("food", &["pizza", "bread", "soup"]),
];

fn multilabel_rows(seed: u64, n: usize, offset: usize) -> Vec<String> {
    let mut rng = Lcg(seed);
    let base = sentences(n + offset);
    (0..n)
        .map(|i| {
            let mut words: Vec<String> = base[offset + i]
                .split_whitespace()
                .map(String::from)
                .collect();
            let mut labels = Vec::new();
            for (k, (name, kws)) in KEYWORDS.iter().enumerate() {
                let on = rng.below(100) < 40 || (labels.is_empty() && k == KEYWORDS.len() - 1);
                if on {
                    let at = rng.below(words.len() + 1);
                    words.insert(at, kws[rng.below(kws.len())].to_string());
                    labels.push(*name);
                }
            }
            format!("{}\t{}", words.join(" "), labels.join(","))
        })
        .collect()
}

#[test]
fn multilabel_learns_planted_labels_and_exports_tuned_thresholds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let train = write_tsv(
        &d.join("train.tsv"),
        "text\tlabel",
        &multilabel_rows(1, 320, 0),
    );
    let val = write_tsv(
        &d.join("val.tsv"),
        "text\tlabel",
        &multilabel_rows(2, 80, 320),
    );
    let test = write_tsv(
        &d.join("test.tsv"),
        "text\tlabel",
        &multilabel_rows(3, 80, 400),
    );
    let cfg = config(
        d,
        "type = \"multilabel\"\nlabel_separator = \",\"",
        &format!("train = {train:?}\nvalidation = {val:?}\ntest = {test:?}"),
        "epochs = 2",
    );
    let run = d.join("run");
    let m = train_ok(&cfg, &run, &[]);
    assert_eq!(m["task"], "multilabel");
    assert_eq!(m["metric"], "micro_f1");
    let labels: Vec<&str> = m["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(labels, vec!["animal", "food", "weather"]);
    // Each label is present ~40 % of the time: predicting all or none gives micro-F1 ≤ 0.6.
    let f1 = m["test_scores"]["micro_f1"].as_f64().unwrap();
    assert!(f1 > 0.9, "test micro-F1 {f1}");
    assert!(m["test_scores"]["subset_accuracy"].as_f64().unwrap() > 0.75);
    let thresholds = m["thresholds"].as_array().unwrap();
    assert_eq!(thresholds.len(), 3);
    let model = run.join("model");
    let meta = json(&model.join("tunekit.json"));
    assert_eq!(meta["task"]["type"], "multilabel");
    assert_eq!(&meta["task"]["thresholds"], &m["thresholds"]);
    let hf = json(&model.join("config.json"));
    assert_eq!(hf["problem_type"], "multi_label_classification");
    assert_eq!(hf["id2label"]["1"], "food");
    eval_matches_test_scores(&model, &test, &m, &[]);

    // predict: the labels are exactly those whose probability reaches their threshold.
    let input = write_tsv(
        &d.join("in.tsv"),
        "text",
        &["a long rain on the old horse".into(), "soup".into()],
    );
    let out = d.join("pred.jsonl");
    let rows = predict_rows(&model, &input, &out);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let probs = r["probabilities"].as_array().unwrap();
        let chosen: Vec<&str> = r["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for (k, l) in labels.iter().enumerate() {
            let on = probs[k].as_f64().unwrap() >= thresholds[k].as_f64().unwrap();
            assert_eq!(on, chosen.contains(l), "{r}");
        }
    }
    let first: Vec<&str> = rows[0]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(first, vec!["animal", "weather"], "{}", rows[0]);
    // The serving path is for classifiers: it refuses this model instead of misusing it.
    let merged = d.join("merged");
    let o = tunekit(&[
        "merge",
        "--model",
        model.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["multilabel model"]);
}

fn regression_rows(seed: u64, n: usize, offset: usize) -> Vec<String> {
    let mut rng = Lcg(seed);
    let base = sentences(n + offset);
    (0..n)
        .map(|i| {
            let k = rng.below(4);
            let mut words: Vec<String> = base[offset + i]
                .split_whitespace()
                .map(String::from)
                .collect();
            for _ in 0..k {
                let at = rng.below(words.len() + 1);
                words.insert(at, "excellent".into());
            }
            format!("{}\t{}", words.join(" "), k as f64 * 1.5 - 1.0)
        })
        .collect()
}

#[test]
fn regression_fits_a_planted_count_and_reports_correlations() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let train = write_tsv(
        &d.join("train.tsv"),
        "text\tscore",
        &regression_rows(1, 320, 0),
    );
    let val = write_tsv(
        &d.join("val.tsv"),
        "text\tscore",
        &regression_rows(2, 80, 320),
    );
    let test = write_tsv(
        &d.join("test.tsv"),
        "text\tscore",
        &regression_rows(3, 80, 400),
    );
    let cfg = config(
        d,
        "type = \"regression\"",
        &format!(
            "train = {train:?}\nvalidation = {val:?}\ntest = {test:?}\nlabel_column = \"score\""
        ),
        "epochs = 3",
    );
    let run = d.join("run");
    let m = train_ok(&cfg, &run, &[]);
    assert_eq!(m["metric"], "mse");
    let s = &m["test_scores"];
    // Targets are −1, 0.5, 2, 3.5 (variance 2.8): predicting the mean scores MSE ≈ 2.8, R² 0.
    let (mse, r2, pearson) = (
        s["mse"].as_f64().unwrap(),
        s["r2"].as_f64().unwrap(),
        s["pearson"].as_f64().unwrap(),
    );
    assert!(mse < 0.5 && r2 > 0.8 && pearson > 0.9, "{s}");
    assert!((s["rmse"].as_f64().unwrap() - mse.sqrt()).abs() < 1e-12);
    let hf = json(&run.join("model/config.json"));
    assert_eq!(hf["problem_type"], "regression");
    assert_eq!(hf["id2label"].as_object().unwrap().len(), 1);
    eval_matches_test_scores(&run.join("model"), &test, &m, &["--label-column", "score"]);
    // Predictions file of the run: one per test row, with the target beside the prediction.
    let p = read_jsonl(&run.join("predictions/test.jsonl"));
    assert_eq!(p.len(), 80);
    let mean_abs: f64 = p
        .iter()
        .map(|r| (r["prediction"].as_f64().unwrap() - r["target"].as_f64().unwrap()).abs())
        .sum::<f64>()
        / 80.0;
    assert!((mean_abs - s["mae"].as_f64().unwrap()).abs() < 1e-5);

    // A target that is not a number names its file and line.
    let bad = write_tsv(
        &d.join("bad.tsv"),
        "text\tscore",
        &["fine\t1.0".into(), "broken\thigh".into()],
    );
    let cfg = config(
        d,
        "type = \"regression\"",
        &format!("train = {bad:?}\nlabel_column = \"score\""),
        "epochs = 1",
    );
    let o = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--run-dir",
        d.join("bad").to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["bad.tsv:3", "\"high\""]);
}

const FIRST: [&str; 6] = ["John", "Maria", "Ahmed", "Yuki", "Olga", "Pedro"];
const LAST: [&str; 5] = ["Smith", "Garcia", "Khan", "Tanaka", "Petrova"];
const CITIES: [&str; 6] = ["Paris", "Lagos", "Lima", "Oslo", "Hanoi", "Denver"];

/// CoNLL sentences: MR words (O) with a person (B-PER I-PER) and a city (B-LOC) planted.
fn conll(seed: u64, n: usize, offset: usize) -> String {
    let mut rng = Lcg(seed);
    let base = sentences(n + offset);
    let mut out = String::new();
    for i in 0..n {
        let mut words: Vec<(String, &str)> = base[offset + i]
            .split_whitespace()
            .map(|w| (w.to_lowercase(), "O"))
            .collect();
        let at = rng.below(words.len() + 1);
        words.insert(at, (LAST[rng.below(LAST.len())].into(), "I-PER"));
        words.insert(at, (FIRST[rng.below(FIRST.len())].into(), "B-PER"));
        words.push(("in".into(), "O"));
        words.push((CITIES[rng.below(CITIES.len())].into(), "B-LOC"));
        for (w, t) in words {
            out.push_str(&format!("{w}\t{t}\n"));
        }
        out.push('\n');
    }
    out
}

#[test]
fn token_classification_learns_planted_entities_and_predicts_them_from_words() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let train = d.join("train.conll");
    std::fs::write(&train, conll(1, 240, 0)).unwrap();
    let val = d.join("val.conll");
    std::fs::write(&val, conll(2, 60, 240)).unwrap();
    let test = d.join("test.conll");
    std::fs::write(&test, conll(3, 60, 300)).unwrap();
    let cfg = config(
        d,
        "type = \"token_classification\"",
        &format!("train = {train:?}\nvalidation = {val:?}\ntest = {test:?}\nformat = \"conll\""),
        "epochs = 2",
    );
    let run = d.join("run");
    let m = train_ok(&cfg, &run, &[]);
    assert_eq!(m["metric"], "f1");
    assert_eq!(
        m["labels"],
        serde_json::json!(["O", "B-LOC", "B-PER", "I-PER"])
    );
    let f1 = m["test_scores"]["f1"].as_f64().unwrap();
    assert!(f1 > 0.9, "entity F1 {f1}");
    let hf = json(&run.join("model/config.json"));
    assert_eq!(hf["architectures"][0], "BertForTokenClassification");
    assert_eq!(
        json(&run.join("model/tunekit.json"))["task"]["scheme"],
        "bio"
    );
    eval_matches_test_scores(&run.join("model"), &test, &m, &[]);
    // Its own report, redrawn from its files (tests/report_tasks.rs checks the content).
    let o = tunekit(&["report", run.to_str().unwrap()]);
    assert!(o.status.success(), "report: {}", stderr(&o));
    let preds = read_jsonl(&run.join("predictions/test.jsonl"));
    assert_eq!(preds.len(), 60);
    assert_eq!(
        preds[0]["labels"].as_array().unwrap().len(),
        preds[0]["predicted"].as_array().unwrap().len()
    );

    // predict from words alone (no tag column): entities with their words.
    let input = d.join("words.txt");
    // The second sentence (60 words) exceeds max_length 48: its cut-off words are counted.
    let long: String = (0..60).map(|i| format!("word{i}\n")).collect();
    std::fs::write(
        &input,
        format!("we\nsaw\nMaria\nKhan\nin\nOslo\n\n{long}\n"),
    )
    .unwrap();
    let out = d.join("pred.jsonl");
    let rows = predict_rows(&run.join("model"), &input, &out);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["words_truncated"], 0);
    let cut = rows[1]["words_truncated"].as_u64().unwrap();
    assert!(cut > 0 && cut < 60, "{}", rows[1]["words_truncated"]);
    assert_eq!(rows[1]["tags"].as_array().unwrap().len(), 60);
    assert_eq!(
        rows[0]["entities"],
        serde_json::json!([
            {"type": "PER", "start": 2, "end": 4, "text": "Maria Khan"},
            {"type": "LOC", "start": 5, "end": 6, "text": "Oslo"}
        ]),
        "{}",
        rows[0]
    );

    // A tag the model does not know, in evaluation data, names file and line.
    let odd = d.join("odd.conll");
    std::fs::write(&odd, "Maria\tB-PER\nworks\tO\nat\tO\nAcme\tB-ORG\n").unwrap();
    let o = tunekit(&[
        "eval",
        "--model",
        run.join("model").to_str().unwrap(),
        "--data",
        odd.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["odd.conll:4", "B-ORG"]);
}

#[test]
fn wnut16_is_read_split_and_aligned_with_every_word_accounted_for() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let file = root().join("assets/data/wnut16/ner.txt");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut tag_counts = std::collections::BTreeMap::<String, u64>::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        *tag_counts
            .entry(l.rsplit(['\t', ' ']).next().unwrap().to_string())
            .or_default() += 1;
    }
    // max_length 16 truncates many tweets: the words that lose their tag are counted.
    let cfg = config(
        d,
        "type = \"token_classification\"",
        &format!(
            "train = {file:?}\nformat = \"conll\"\n[data.split]\nvalidation = 0.1\ntest = 0.1"
        ),
        "epochs = 1\nmax_steps = 1",
    );
    let run = d.join("run");
    let m = train_ok(&cfg, &run, &["--set", "model.max_length=16"]);
    // 10 entity types in BIO: 21 tags.
    assert_eq!(m["labels"].as_array().unwrap().len(), 21);
    let report = json(&run.join("data_report.json"));
    assert_eq!(report["scheme"], "bio");
    let splits = report["splits"].as_array().unwrap();
    let total = |k: &str| -> u64 { splits.iter().map(|s| s[k].as_u64().unwrap()).sum() };
    assert_eq!(total("sentences"), 2394);
    let mut seen = std::collections::BTreeMap::<String, u64>::new();
    for s in splits {
        for (t, c) in s["tag_counts"].as_object().unwrap() {
            *seen.entry(t.clone()).or_default() += c.as_u64().unwrap();
        }
    }
    assert_eq!(seen, tag_counts);
    assert_eq!(total("words"), tag_counts.values().sum::<u64>());
    assert!(total("sentences_truncated") > 100);
    assert!(total("words_without_tag_after_truncation") > 1000);
    assert!(splits.iter().filter(|s| s["carved"] == true).count() == 2);
}

/// (first half, second half) of MR sentences: the contrastive task is to match them.
fn halves(n: usize, offset: usize) -> Vec<String> {
    let text = std::fs::read_to_string(mr("train")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap())
        .filter(|t| t.split_whitespace().count() >= 10)
        .skip(offset)
        .take(n)
        .map(|t| {
            let w: Vec<&str> = t.split_whitespace().collect();
            let (a, b) = w.split_at(w.len() / 2);
            format!("{}\t{}", a.join(" "), b.join(" "))
        })
        .collect()
}

#[test]
fn embedding_training_improves_in_batch_retrieval_and_exports_sentence_transformers_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let train = write_tsv(&d.join("train.tsv"), "anchor\tpositive", &halves(320, 0));
    let val = write_tsv(&d.join("val.tsv"), "anchor\tpositive", &halves(100, 4000));
    let test = write_tsv(&d.join("test.tsv"), "anchor\tpositive", &halves(100, 4200));
    let data = format!(
        "train = {train:?}\nvalidation = {val:?}\ntest = {test:?}\ntext_column = \"anchor\"\ntext_pair_column = \"positive\""
    );
    let cfg = config(d, "type = \"embedding\"", &data, "epochs = 1");
    // The pretrained model's retrieval, measured the same way: one step at a negligible rate.
    let base = train_ok(
        &cfg,
        &d.join("base"),
        &[
            "--set",
            "train.max_steps=1",
            "--set",
            "train.learning_rate=1e-12",
        ],
    );
    let run = d.join("run");
    let m = train_ok(&cfg, &run, &[]);
    assert_eq!(m["metric"], "mrr");
    let (b, t) = (&base["validation_scores"], &m["validation_scores"]);
    let (b_mrr, t_mrr) = (b["mrr"].as_f64().unwrap(), t["mrr"].as_f64().unwrap());
    // Chance MRR over 100 candidates is H(100)/100 ≈ 0.052; the pretrained model's 0.1231
    // equals transformers' mean-pooled all-MiniLM-L6-v2 on these pairs (checked by hand).
    assert!((b_mrr - 0.1231).abs() < 2e-3, "pretrained MRR {b}");
    // 20 steps on 320 pairs: a modest but real gain (a run that trained nothing scores b).
    assert!(
        t_mrr > b_mrr + 0.01,
        "training must improve MRR: {b_mrr} → {t_mrr}"
    );
    assert!(t["loss"].as_f64().unwrap() < b["loss"].as_f64().unwrap());
    let model = run.join("model");
    let hf = json(&model.join("config.json"));
    assert_eq!(hf["architectures"][0], "BertModel");
    assert!(hf.get("id2label").is_none());
    assert_eq!(
        json(&model.join("modules.json")).as_array().unwrap().len(),
        3
    );
    assert_eq!(
        json(&model.join("1_Pooling/config.json"))["pooling_mode_mean_tokens"],
        true
    );
    let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.names().iter().all(|n| !n.starts_with("classifier")));
    eval_matches_test_scores(
        &model,
        &test,
        &m,
        &["--text-column", "anchor", "--text-pair-column", "positive"],
    );

    // predict: unit vectors, pointing where `tunekit embed` (mean pooling) points.
    let input = write_tsv(&d.join("in.tsv"), "text", &["a quiet , moving film".into()]);
    let v: Vec<f64> = predict_rows(&model, &input, &d.join("pred.jsonl"))[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    let o = tunekit(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let w: Vec<f64> = e["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let wn = w.iter().map(|x| x * x).sum::<f64>().sqrt();
    let cos: f64 = v.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / wn;
    assert!(cos > 0.9999, "cosine {cos}");
}

#[test]
fn task_configs_that_cannot_work_are_refused_with_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let train = mr_subset("train", 20, d);
    let cases: [(&str, &str, &str, &[&str]); 5] = [
        ("type = \"embedding\"", "", "", &["text_pair_column"]),
        (
            "type = \"pair_classification\"",
            "",
            "",
            &["text_pair_column"],
        ),
        (
            "type = \"regression\"",
            "",
            "metric = \"accuracy\"",
            &["train.metric", "mse"],
        ),
        (
            "type = \"multilabel\"",
            "",
            "oversample = true",
            &["train.oversample"],
        ),
        (
            "type = \"multilabel\"\nthreshold = 1.5",
            "",
            "",
            &["task.threshold"],
        ),
    ];
    for (task, data_extra, train_extra, needles) in cases {
        let cfg = config(
            d,
            task,
            &format!("train = {train:?}\n{data_extra}"),
            train_extra,
        );
        let o = tunekit(&["train", cfg.to_str().unwrap()]);
        assert_bad_input(&o, needles);
    }
    // --cv is for classification.
    let cfg = config(
        d,
        "type = \"regression\"",
        &format!("train = {train:?}"),
        "",
    );
    let o = tunekit(&["train", cfg.to_str().unwrap(), "--cv", "3"]);
    assert_bad_input(&o, &["--cv"]);
}

#[test]
fn a_killed_task_run_resumes_to_the_same_model() {
    // The task loop shares the classification loop's checkpoints: kill -9 mid-run, --resume,
    // and the exported weights equal an uninterrupted run's bit for bit.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(&d.join("tiny-model"));
    let train = write_tsv(
        &d.join("train.tsv"),
        "text\tlabel",
        &multilabel_rows(1, 96, 0),
    );
    let val = write_tsv(
        &d.join("val.tsv"),
        "text\tlabel",
        &multilabel_rows(2, 32, 96),
    );
    let cfg = d.join("ml.toml");
    std::fs::write(
        &cfg,
        format!(
            "[task]\ntype = \"multilabel\"\n\n[model]\npath = {model:?}\nmax_length = 32\n\n[data]\ntrain = {train:?}\nvalidation = {val:?}\n\n[train]\nepochs = 6\nbatch_size = 8\nlearning_rate = 1e-3\ncheckpoint_every_steps = 3\neval_every_steps = 10\nseed = 9\n\n[run]\ndir = {:?}\n",
            d.join("runs")
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let full = d.join("full");
    train_ok(&cfg, &full, &[]);
    let killed = d.join("killed");
    let at = train_and_kill(&["train", cfg_s], &killed, 9);
    assert!(at < 72, "killed at step {at}");
    train_ok(&cfg, &killed, &["--resume"]);
    let a = std::fs::read(full.join("model/model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("model/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights must be bit-identical");
    assert_eq!(
        json(&full.join("metrics.json"))["validation_scores"],
        json(&killed.join("metrics.json"))["validation_scores"]
    );
}

#[test]
fn lora_token_classification_exports_a_token_cls_adapter_that_eval_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(&d.join("tiny-model"));
    let train = d.join("train.conll");
    std::fs::write(&train, conll(1, 48, 0)).unwrap();
    let val = d.join("val.conll");
    std::fs::write(&val, conll(2, 16, 48)).unwrap();
    let cfg = d.join("ner-lora.toml");
    std::fs::write(
        &cfg,
        format!(
            "[task]\ntype = \"token_classification\"\n\n[model]\npath = {model:?}\nmax_length = 32\n\n[data]\ntrain = {train:?}\nvalidation = {val:?}\nformat = \"conll\"\n\n[train]\nepochs = 1\nbatch_size = 8\nlearning_rate = 1e-3\n\n[strategy.lora]\nrank = 2\ndropout = 0.1\n\n[run]\ndir = {:?}\n",
            d.join("runs")
        ),
    )
    .unwrap();
    let run = d.join("run");
    let m = train_ok(&cfg, &run, &[]);
    let exported = run.join("model");
    let adapter = json(&exported.join("adapter_config.json"));
    assert_eq!(adapter["task_type"], "TOKEN_CLS");
    assert_eq!(adapter["lora_dropout"], 0.1);
    assert!(
        !exported.join("model.safetensors").exists(),
        "adapter-only export"
    );
    // The adapter directory evaluates directly and gives the run's validation scores.
    let out_json = d.join("eval.json");
    let o = tunekit(&[
        "eval",
        "--model",
        exported.to_str().unwrap(),
        "--data",
        val.to_str().unwrap(),
        "--output",
        out_json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = json(&out_json);
    let want = m["validation_scores"]["token_accuracy"].as_f64().unwrap();
    let got = e["scores"]["token_accuracy"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
}
