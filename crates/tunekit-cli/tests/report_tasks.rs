//! `report.html` and the model card of every task beyond single-label classification, from
//! tiny real runs (all-MiniLM-L6-v2, a few dozen planted examples, a few steps): the task's
//! figures and tables are on the page with the numbers of `metrics.json`, `tunekit report`
//! redraws the same page from the run's files, headless Chromium lays every figure out; the
//! card's YAML front matter parses with `huggingface_hub` (pipeline tag, `model-index`
//! values equal to `metrics.json`) and its usage snippet, run by Python against the exported
//! model, reproduces the run's own test predictions.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// MR training sentences (text only), `n` of them spread over the file, at most 10 words.
fn sentences(n: usize, offset: usize) -> Vec<String> {
    let text = std::fs::read_to_string(mr("train")).unwrap();
    let all: Vec<&str> = text.lines().skip(1).collect();
    let step = all.len() / (n + offset);
    (offset..offset + n)
        .map(|i| {
            let t = all[i * step].split('\t').next().unwrap();
            t.split_whitespace().take(10).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

fn write_tsv(path: &Path, header: &str, rows: &[String]) -> PathBuf {
    std::fs::write(path, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
    path.to_path_buf()
}

/// Train MiniLM on the given data (`task`, `data` go into their sections) and return the run
/// directory and its `metrics.json`.
fn train(dir: &Path, task: &str, data: &str, epochs: usize) -> (PathBuf, serde_json::Value) {
    let cfg = dir.join("task.toml");
    std::fs::write(
        &cfg,
        format!(
            "[task]\n{task}\n\n[model]\npath = {model:?}\npooling = \"mean\"\nmax_length = 40\n\n[data]\n{data}\n\n[train]\nepochs = {epochs}\nbatch_size = 16\nlearning_rate = 2e-4\nwarmup_ratio = 0.0\nscheduler = \"constant\"\nseed = 5\n\n[run]\nname = \"task\"\ndir = {runs:?}\n",
            model = minilm(),
            runs = dir.join("runs")
        ),
    )
    .unwrap();
    let run = dir.join("run");
    let out = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "train: {}", stderr(&out));
    let m = json(&run.join("metrics.json"));
    (run, m)
}

/// The text of the table cell `data-key="KEY"`.
fn cell<'a>(page: &'a str, key: &str) -> &'a str {
    let tag = format!("data-key=\"{key}\">");
    let at = page
        .find(&tag)
        .unwrap_or_else(|| panic!("no cell {key} on the page"));
    let rest = &page[at + tag.len()..];
    &rest[..rest.find("</td>").unwrap()]
}

/// The page's cell `TABLE/split/name` (`TABLE` empty: the final-scores table) shows
/// `metrics.json` → `{split}_scores` → `name`.
fn cell_equals_metric(page: &str, m: &serde_json::Value, table: &str, split: &str, name: &str) {
    let v = &m[format!("{split}_scores")][name];
    // JSON has no NaN: serde writes an undefined score (e.g. a constant prediction's
    // correlation) as null, which the page shows as a dash.
    let want = match v.as_f64() {
        Some(v) => format!("{v:.4}"),
        None if v.is_null() => "—".to_string(),
        None => panic!("metrics.json {split} {name}: {v}"),
    };
    let key = format!(
        "{table}{}{split}/{name}",
        if table.is_empty() { "" } else { "/" }
    );
    assert_eq!(cell(page, &key), want, "{key}");
}

/// The common page checks: written by the run, self-contained, every `figures` id drawn (and
/// laid out by Chromium), the final-scores table equal to metrics.json, and `tunekit report`
/// redraws the same bytes. Returns the page.
fn check_page(run: &Path, m: &serde_json::Value, figures: &[&str], scratch: &Path) -> String {
    let path = run.join("report.html");
    let page = std::fs::read_to_string(&path).expect("a task run writes report.html");
    for banned in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!page.contains(banned), "not self-contained: {banned}");
    }
    for id in ["fig-loss", "fig-metric", "fig-lr"].iter().chain(figures) {
        assert!(
            page.contains(&format!("id=\"{id}\"")),
            "figure {id} missing"
        );
    }
    assert!(
        !page.contains("class=\"plot missing\""),
        "a figure is not drawn"
    );
    for split in ["validation", "test"] {
        for (name, _) in m[format!("{split}_scores")].as_object().unwrap() {
            if !name.contains('/') {
                cell_equals_metric(&page, m, "", split, name);
            }
        }
    }
    std::fs::remove_file(&path).unwrap();
    let out = tunekit(&["report", run.to_str().unwrap()]);
    assert!(out.status.success(), "report: {}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), page);

    std::fs::create_dir_all(scratch).unwrap();
    let drawn = rendered_figures(&page, scratch);
    for id in ["fig-loss", "fig-metric", "fig-lr"].iter().chain(figures) {
        let f = &drawn[id];
        assert_eq!(f["missing"], false, "{id}: {f}");
        assert!(f["width"].as_f64().unwrap() > 300.0, "{id} too narrow: {f}");
        assert!(f["height"].as_f64().unwrap() > 150.0, "{id} too short: {f}");
        assert!(f["inked"].as_u64().unwrap() >= 10, "{id} looks empty: {f}");
    }
    page
}

/// Python: parse the card with `huggingface_hub.ModelCard`, then run its first Python block
/// with the model path and `texts` substituted; writes what it found as JSON.
const CARD_SCRIPT: &str = r#"
import json, re, sys
from huggingface_hub import ModelCard
card_path, model_dir, texts_path, out_path = sys.argv[1:5]
card = ModelCard.load(card_path)
d = card.data
out = {"pipeline_tag": d.pipeline_tag, "library_name": d.library_name,
       "results": [{"split": r.dataset_split, "type": r.metric_type, "name": r.metric_name,
                    "value": r.metric_value} for r in (d.eval_results or [])]}
code = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
code = code.replace("PATH_OR_HUB_ID_OF_THIS_MODEL", model_dir)
texts = json.load(open(texts_path))
code = re.sub(r"^texts = .*$", lambda _: "texts = " + json.dumps(texts), code, count=1, flags=re.M)
ns = {}
exec(code, ns)
for k in ["labels", "values", "tags", "embeddings"]:
    if k in ns:
        v = ns[k]
        out[k] = v.tolist() if hasattr(v, "tolist") else v
json.dump(out, open(out_path, "w"))
"#;

/// Check the card of `run` and run its snippet on `texts`; returns the script's findings.
fn check_card(
    run: &Path,
    m: &serde_json::Value,
    pipeline_tag: &str,
    library: &str,
    texts: &[String],
) -> serde_json::Value {
    let card_path = run.join("model/README.md");
    let card = std::fs::read_to_string(&card_path).unwrap();
    assert!(card.starts_with("---\n"), "{card}");
    let texts_path = run.join("snippet-texts.json");
    std::fs::write(&texts_path, serde_json::to_string(texts).unwrap()).unwrap();
    let out_path = run.join("snippet-out.json");
    let o = Command::new("python3")
        .args(["-c", CARD_SCRIPT])
        .arg(&card_path)
        .arg(run.join("model"))
        .arg(&texts_path)
        .arg(&out_path)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "card script: {}\n{card}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got = json(&out_path);
    assert_eq!(got["pipeline_tag"], pipeline_tag);
    assert_eq!(got["library_name"], library);
    let results = got["results"].as_array().unwrap();
    assert!(!results.is_empty(), "no model-index results: {card}");
    for r in results {
        let split = r["split"].as_str().unwrap();
        let scores = &m[format!("{split}_scores")];
        // The value is one of the split's scores, exactly (the card writes f64 round-trip).
        let v = r["value"].as_f64().unwrap();
        assert!(
            scores
                .as_object()
                .unwrap()
                .values()
                .any(|s| s.as_f64() == Some(v)),
            "{r} is none of metrics.json's {split} scores"
        );
    }
    // The results table of the body has the test scores to 4 decimals.
    let names: Vec<&str> = card
        .lines()
        .find(|l| l.starts_with("| split |"))
        .unwrap()
        .split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .skip(1)
        .collect();
    let row: Vec<&str> = card
        .lines()
        .find(|l| l.starts_with("| test |"))
        .unwrap()
        .split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .skip(1)
        .collect();
    assert_eq!(names.len(), row.len());
    for (n, v) in names.iter().zip(row) {
        let want = m["test_scores"][*n].as_f64().unwrap();
        assert_eq!(v, format!("{want:.4}"), "card's test {n}");
    }
    got
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

const KEYWORDS: [(&str, &str); 3] = [("animal", "horse"), ("food", "pizza"), ("weather", "rain")];

fn multilabel_rows(n: usize, offset: usize) -> Vec<String> {
    sentences(n, offset)
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let mut words: Vec<String> = s.split_whitespace().map(String::from).collect();
            let mut labels = Vec::new();
            for (k, (name, kw)) in KEYWORDS.iter().enumerate() {
                let last = k == KEYWORDS.len() - 1;
                if (i + offset).is_multiple_of(k + 2) || (last && labels.is_empty()) {
                    words.insert((i * 7 + k) % (words.len() + 1), kw.to_string());
                    labels.push(*name);
                }
            }
            format!("{}\t{}", words.join(" "), labels.join(","))
        })
        .collect()
}

#[test]
fn multilabel_report_has_per_label_scores_and_threshold_curves_and_the_card_its_thresholds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let train_f = write_tsv(&d.join("train.tsv"), "text\tlabel", &multilabel_rows(64, 0));
    let val = write_tsv(&d.join("val.tsv"), "text\tlabel", &multilabel_rows(24, 64));
    let test = write_tsv(&d.join("test.tsv"), "text\tlabel", &multilabel_rows(24, 88));
    let (run, m) = train(
        d,
        "type = \"multilabel\"",
        &format!("train = {train_f:?}\nvalidation = {val:?}\ntest = {test:?}"),
        1,
    );
    let figures = ["fig-threshold-0", "fig-threshold-1", "fig-threshold-2"];
    let page = check_page(&run, &m, &figures, &d.join("chromium"));
    // The per-label table's F1 average is the run's macro F1.
    cell_equals_metric(&page, &m, "per-label", "test", "macro_f1");
    // Each curve marks the exported threshold of its label.
    for t in m["thresholds"].as_array().unwrap() {
        let label = format!("chosen threshold {:.3}", t.as_f64().unwrap());
        assert!(page.contains(&label), "{label} not marked");
    }

    let preds = read_jsonl(&run.join("predictions/test.jsonl"));
    let texts: Vec<String> = preds
        .iter()
        .map(|p| p["text"].as_str().unwrap().to_string())
        .collect();
    let got = check_card(&run, &m, "text-classification", "transformers", &texts);
    let card = std::fs::read_to_string(run.join("model/README.md")).unwrap();
    assert!(card.contains("## Labels and decision thresholds"));
    // The snippet's label sets are the run's own test predictions.
    let labels = got["labels"].as_array().unwrap();
    for (p, l) in preds.iter().zip(labels) {
        assert_eq!(strings(l), strings(&p["predicted"]), "{}", p["text"]);
    }
}

fn regression_rows(n: usize, offset: usize) -> Vec<String> {
    sentences(n, offset)
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let k = (i + offset) % 4;
            let mut words: Vec<String> = s.split_whitespace().map(String::from).collect();
            for j in 0..k {
                words.insert((i + j * 3) % (words.len() + 1), "excellent".into());
            }
            format!("{}\t{}", words.join(" "), k as f64 * 1.5 - 1.0)
        })
        .collect()
}

#[test]
fn regression_report_has_scatter_and_residuals_and_the_card_a_value_snippet() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let train_f = write_tsv(&d.join("train.tsv"), "text\tscore", &regression_rows(64, 0));
    let val = write_tsv(&d.join("val.tsv"), "text\tscore", &regression_rows(24, 64));
    let test = write_tsv(&d.join("test.tsv"), "text\tscore", &regression_rows(24, 88));
    let (run, m) = train(
        d,
        "type = \"regression\"",
        &format!(
            "train = {train_f:?}\nvalidation = {val:?}\ntest = {test:?}\nlabel_column = \"score\""
        ),
        1,
    );
    let page = check_page(
        &run,
        &m,
        &["fig-scatter", "fig-residuals"],
        &d.join("chromium"),
    );
    for k in ["mse", "mae", "pearson", "spearman"] {
        cell_equals_metric(&page, &m, "errors", "test", k);
    }
    // The residual summary is computed from the predictions file: mean of true − predicted.
    let preds = read_jsonl(&run.join("predictions/test.jsonl"));
    let mean = preds
        .iter()
        .map(|p| p["target"].as_f64().unwrap() - p["prediction"].as_f64().unwrap())
        .sum::<f64>()
        / preds.len() as f64;
    assert!(
        page.contains(&format!("mean residual {mean:.4}")),
        "mean residual {mean:.4} not on the page"
    );
    assert!(page.contains("id=\"largest-errors\""));

    let texts: Vec<String> = preds
        .iter()
        .map(|p| p["text"].as_str().unwrap().to_string())
        .collect();
    let got = check_card(&run, &m, "text-classification", "transformers", &texts);
    // The snippet's values are the run's test predictions (transformers vs tunekit's CPU
    // kernels: float32 rounding only).
    for (p, v) in preds.iter().zip(got["values"].as_array().unwrap()) {
        let (a, b) = (p["prediction"].as_f64().unwrap(), v.as_f64().unwrap());
        assert!((a - b).abs() < 1e-3 * a.abs().max(1.0), "{a} vs {b}");
    }
}

const FIRST: [&str; 4] = ["John", "Maria", "Ahmed", "Yuki"];
const CITIES: [&str; 4] = ["Paris", "Lagos", "Lima", "Oslo"];

/// CoNLL sentences: MR words (O) with a person (B-PER I-PER) and a city (B-LOC) planted.
fn conll(n: usize, offset: usize) -> String {
    let mut out = String::new();
    for (i, s) in sentences(n, offset).into_iter().enumerate() {
        let mut words: Vec<(String, &str)> = s
            .split_whitespace()
            .map(|w| (w.to_lowercase(), "O"))
            .collect();
        let at = (i * 5) % (words.len() + 1);
        words.insert(at, ("Smith".into(), "I-PER"));
        words.insert(at, (FIRST[i % 4].into(), "B-PER"));
        words.push(("in".into(), "O"));
        words.push((CITIES[(i / 2) % 4].into(), "B-LOC"));
        for (w, t) in words {
            out.push_str(&format!("{w}\t{t}\n"));
        }
        out.push('\n');
    }
    out
}

#[test]
fn token_classification_report_has_per_type_scores_and_error_spans_and_the_card_its_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (train_f, val, test) = (
        d.join("train.conll"),
        d.join("val.conll"),
        d.join("test.conll"),
    );
    std::fs::write(&train_f, conll(64, 0)).unwrap();
    std::fs::write(&val, conll(16, 64)).unwrap();
    std::fs::write(&test, conll(16, 80)).unwrap();
    let (run, m) = train(
        d,
        "type = \"token_classification\"",
        &format!("train = {train_f:?}\nvalidation = {val:?}\ntest = {test:?}\nformat = \"conll\""),
        1,
    );
    let page = check_page(&run, &m, &[], &d.join("chromium"));
    // Per-type F1 (seqeval) equals the run's f1/<type> scores.
    for (k, _) in m["test_scores"].as_object().unwrap() {
        if k.starts_with("f1/") {
            cell_equals_metric(&page, &m, "entity-types", "test", k);
        }
    }
    cell_equals_metric(&page, &m, "entity-types", "test", "f1");
    assert!(page.contains("id=\"error-spans\""));
    assert!(page.contains("id=\"data-splits\""), "CoNLL data table");

    let preds = read_jsonl(&run.join("predictions/test.jsonl"));
    // The words are in the predictions lines (the error spans quote them).
    assert_eq!(
        preds[0]["words"].as_array().unwrap().len(),
        preds[0]["labels"].as_array().unwrap().len()
    );
    let texts: Vec<String> = preds
        .iter()
        .map(|p| p["text"].as_str().unwrap().to_string())
        .collect();
    let got = check_card(&run, &m, "token-classification", "transformers", &texts);
    let card = std::fs::read_to_string(run.join("model/README.md")).unwrap();
    assert!(
        card.contains(
            "## Tags\n\nTag scheme BIO; tags (id order): `O`, `B-LOC`, `B-PER`, `I-PER`."
        ),
        "{card}"
    );
    // The snippet tags every word as the run did.
    for (p, t) in preds.iter().zip(got["tags"].as_array().unwrap()) {
        assert_eq!(strings(t), strings(&p["predicted"]), "{}", p["text"]);
    }
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
            let w: Vec<&str> = t.split_whitespace().take(20).collect();
            let (a, b) = w.split_at(w.len() / 2);
            format!("{}\t{}", a.join(" "), b.join(" "))
        })
        .collect()
}

#[test]
fn embedding_report_has_retrieval_metrics_and_similarities_and_the_card_a_sentence_transformers_snippet()
 {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let train_f = write_tsv(&d.join("train.tsv"), "anchor\tpositive", &halves(64, 0));
    let val = write_tsv(&d.join("val.tsv"), "anchor\tpositive", &halves(24, 3000));
    let test = write_tsv(&d.join("test.tsv"), "anchor\tpositive", &halves(24, 3100));
    let (run, m) = train(
        d,
        "type = \"embedding\"",
        &format!(
            "train = {train_f:?}\nvalidation = {val:?}\ntest = {test:?}\ntext_column = \"anchor\"\ntext_pair_column = \"positive\""
        ),
        1,
    );
    let page = check_page(
        &run,
        &m,
        &["fig-recall-at-k", "fig-similarity"],
        &d.join("chromium"),
    );
    let preds = read_jsonl(&run.join("predictions/test.jsonl"));
    let ranks: Vec<f64> = preds
        .iter()
        .map(|p| p["positive_rank"].as_f64().unwrap())
        .collect();
    // The ranks in the predictions file give the run's MRR (same similarity sums).
    let mrr = ranks.iter().map(|r| 1.0 / r).sum::<f64>() / ranks.len() as f64;
    let want = m["test_scores"]["mrr"].as_f64().unwrap();
    assert!((mrr - want).abs() < 1e-12, "{mrr} vs {want}");
    let r10 = ranks.iter().filter(|&&r| r <= 10.0).count() as f64 / ranks.len() as f64;
    assert_eq!(
        cell(&page, "retrieval/test/recall_at_10"),
        format!("{r10:.4}")
    );
    for k in ["mrr", "recall_at_1", "recall_at_5"] {
        cell_equals_metric(&page, &m, "retrieval", "test", k);
    }
    for p in &preds {
        // Retrieved first exactly when the positive beats the hardest negative.
        let (s, n) = (
            p["positive_similarity"].as_f64().unwrap(),
            p["nearest_negative_similarity"].as_f64().unwrap(),
        );
        assert_eq!(p["positive_rank"] == 1, s >= n, "{p}");
    }

    // The snippet embeds anchors and positives; their cosine is the run's similarity.
    let (anchors, positives): (Vec<String>, Vec<String>) = preds
        .iter()
        .map(|p| {
            let (a, b) = p["text"].as_str().unwrap().split_once('\t').unwrap();
            (a.to_string(), b.to_string())
        })
        .unzip();
    let texts: Vec<String> = anchors.iter().chain(&positives).cloned().collect();
    let got = check_card(
        &run,
        &m,
        "sentence-similarity",
        "sentence-transformers",
        &texts,
    );
    let e = got["embeddings"].as_array().unwrap();
    let n = anchors.len();
    for (i, p) in preds.iter().enumerate() {
        let dot: f64 = e[i]
            .as_array()
            .unwrap()
            .iter()
            .zip(e[n + i].as_array().unwrap())
            .map(|(a, b)| a.as_f64().unwrap() * b.as_f64().unwrap())
            .sum();
        let want = p["positive_similarity"].as_f64().unwrap();
        assert!((dot - want).abs() < 1e-3, "row {i}: {dot} vs {want}");
    }
}
