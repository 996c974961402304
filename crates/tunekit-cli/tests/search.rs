//! `tunekit search` end to end on a tiny real BERT: trials are normal run directories with
//! the sampled values in their configs, the baseline trial is the config's own recipe, the best
//! config is written ready to train, a pruner really stops a bad trial, parallel trials work,
//! and a search killed with `kill -9` resumes without redoing finished trials.

mod common;

use std::path::Path;

use common::*;

fn search_config(dir: &Path, model: &Path, train_extra: &str, search: &str) -> std::path::PathBuf {
    let base = tiny_config(dir, model, train_extra);
    let text = std::fs::read_to_string(&base).unwrap();
    let path = dir.join("search.toml");
    std::fs::write(&path, format!("{text}\n{search}")).unwrap();
    path
}

fn results(study: &Path) -> serde_json::Value {
    json(&study.join("results.json"))
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn search_runs_trials_as_runs_writes_the_best_config_and_extends_without_redoing_trials() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = search_config(
        tmp.path(),
        &model,
        "epochs = 2",
        "[search]\ntrials = 4\nsampler = \"random\"\nseed = 11\n\n[search.params]\n\"train.learning_rate\" = \"loguniform(1e-4, 3e-3)\"\n\"train.batch_size\" = \"choice([8, 16])\"\n",
    );
    let study = tmp.path().join("study");
    let out = tunekit(&[
        "search",
        cfg.to_str().unwrap(),
        "--run-dir",
        study.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    assert!(out.status.success(), "search failed: {}", stderr(&out));

    let r = results(&study);
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4);
    // Parameters are stored in key order.
    assert_eq!(
        r["params"],
        serde_json::json!(["train.batch_size", "train.learning_rate"])
    );
    let (bs_i, lr_i) = (0, 1);
    for t in trials {
        let n = t["number"].as_u64().unwrap();
        let dir = study.join(format!("trial-{n:03}"));
        assert_eq!(t["state"], "complete", "trial {n}: {t}");
        assert_eq!(json(&dir.join("status.json"))["status"], "complete");
        // The trial trained with its sampled values.
        let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
        let lr = t["values"][lr_i]["float"].as_f64().unwrap();
        assert!((1e-4..=3e-3).contains(&lr));
        let parsed: toml::Table = config.parse().unwrap();
        assert_eq!(parsed["train"]["learning_rate"].as_float().unwrap(), lr);
        let bs = [8, 16][t["values"][bs_i]["choice"].as_u64().unwrap() as usize];
        assert_eq!(parsed["train"]["batch_size"].as_integer().unwrap(), bs);
        // Its objective is its best validation accuracy, and both evaluations were reported.
        let m = json(&dir.join("metrics.json"));
        assert_eq!(t["objective"], m["validation"]["accuracy"]);
        assert_eq!(t["intermediate"].as_array().unwrap().len(), 2);
        assert!(dir.join("report.html").is_file());
    }
    // Trial 0 is the config's own recipe (lr 1e-3, batch 16).
    assert_eq!(trials[0]["values"][lr_i]["float"].as_f64().unwrap(), 1e-3);
    assert_eq!(trials[0]["values"][bs_i]["choice"].as_u64().unwrap(), 1);

    // The best trial is the argmax, and best.toml is that config, ready to train.
    let best = r["best_trial"].as_u64().unwrap() as usize;
    let best_value = trials[best]["objective"].as_f64().unwrap();
    assert!(
        trials
            .iter()
            .all(|t| t["objective"].as_f64().unwrap() <= best_value)
    );
    let best_toml: toml::Table = std::fs::read_to_string(study.join("best.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        best_toml["train"]["learning_rate"].as_float().unwrap(),
        trials[best]["values"][lr_i]["float"].as_f64().unwrap()
    );
    assert!(best_toml.get("search").is_none());
    let out = tunekit(&["data", "check", study.join("best.toml").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "best.toml must be a valid run config: {}",
        stderr(&out)
    );
    // Table, report and importance.
    let table = std::fs::read_to_string(study.join("results.md")).unwrap();
    assert!(table.contains("train.learning_rate") && table.contains("**best**"));
    let page = std::fs::read_to_string(study.join("report.html")).unwrap();
    for id in ["fig-objective", "fig-curves", "fig-slice-0", "fig-slice-1"] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(!page.contains("plot missing"));
    assert_eq!(r["importance"].as_array().unwrap().len(), 2);

    // Extending the budget runs only the new trial.
    let before = mtime(&study.join("trial-002/metrics.json"));
    let out = tunekit(&[
        "search",
        cfg.to_str().unwrap(),
        "--run-dir",
        study.to_str().unwrap(),
        "--set",
        "search.trials=5",
    ]);
    assert!(
        out.status.success(),
        "extended search failed: {}",
        stderr(&out)
    );
    let extended = results(&study);
    assert_eq!(extended["trials"].as_array().unwrap().len(), 5);
    // Wall time adds up over the two invocations.
    let (first_wall, total) = (
        r["total_wall_s"].as_f64().unwrap(),
        extended["total_wall_s"].as_f64().unwrap(),
    );
    assert!(
        first_wall > 0.0 && total > first_wall,
        "{first_wall} then {total}"
    );
    assert!((total - first_wall - extended["wall_s"].as_f64().unwrap()).abs() < 1e-6);
    assert_eq!(
        mtime(&study.join("trial-002/metrics.json")),
        before,
        "finished trial was redone"
    );
    // A changed search is refused rather than mixed into this study.
    let out = tunekit(&[
        "search",
        cfg.to_str().unwrap(),
        "--run-dir",
        study.to_str().unwrap(),
        "--set",
        "search.sampler=\"grid\"",
    ]);
    assert_bad_input(&out, &["search.sqlite", "different config"]);
}

#[test]
fn the_median_pruner_stops_a_diverging_trial_after_its_first_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    // Trial 0 (baseline) trains normally; the grid's other point, lr = 50, blows the loss up.
    let cfg = search_config(
        tmp.path(),
        &model,
        "epochs = 3",
        "[search]\ntrials = 2\nsampler = \"grid\"\npruner = \"median\"\nprune_startup_trials = 1\nobjective = \"loss\"\n\n[search.params]\n\"train.learning_rate\" = \"choice([0.001, 50.0])\"\n",
    );
    let study = tmp.path().join("study");
    let out = tunekit(&[
        "search",
        cfg.to_str().unwrap(),
        "--run-dir",
        study.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "search failed: {}", stderr(&out));
    let r = results(&study);
    let t = r["trials"].as_array().unwrap();
    assert_eq!(t[0]["state"], "complete");
    assert_eq!(t[0]["intermediate"].as_array().unwrap().len(), 3);
    assert_eq!(t[1]["values"][0]["choice"], 1);
    assert_eq!(t[1]["state"], "pruned", "{}", t[1]);
    assert_eq!(t[1]["intermediate"].as_array().unwrap().len(), 1);
    let status = json(&study.join("trial-001/status.json"));
    assert_eq!(status["status"], "pruned");
    assert!(
        !study.join("trial-001/model").exists(),
        "a pruned trial exports nothing"
    );
    assert_eq!(r["best_trial"], 0);
}

#[test]
fn a_killed_search_resumes_its_interrupted_trial_and_keeps_finished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = search_config(
        tmp.path(),
        &model,
        "epochs = 4\ncheckpoint_every_steps = 6",
        "[search]\ntrials = 2\nsampler = \"random\"\n\n[search.params]\n\"train.learning_rate\" = \"loguniform(1e-4, 3e-3)\"\n",
    );
    let study = tmp.path().join("study");
    let latest = study.join("trial-001/checkpoints/latest.json");
    run_and_kill_when(
        &[
            "search",
            cfg.to_str().unwrap(),
            "--run-dir",
            study.to_str().unwrap(),
        ],
        || latest.exists(),
    );
    let first = mtime(&study.join("trial-000/metrics.json"));

    let out = tunekit(&[
        "search",
        cfg.to_str().unwrap(),
        "--run-dir",
        study.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "resumed search failed: {}",
        stderr(&out)
    );
    let r = results(&study);
    let t = r["trials"].as_array().unwrap();
    assert_eq!(t.len(), 2);
    assert!(t.iter().all(|t| t["state"] == "complete"), "{t:?}");
    assert_eq!(
        mtime(&study.join("trial-000/metrics.json")),
        first,
        "trial 0 was redone"
    );
    // Trial 1 continued from its checkpoint: all four evaluations are recorded once.
    let evals: Vec<u64> = t[1]["intermediate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    assert_eq!(evals, vec![1, 2, 3, 4]);
    assert_eq!(
        json(&study.join("trial-001/status.json"))["status"],
        "complete"
    );
}

#[test]
fn a_bad_search_section_is_reported_with_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = search_config(
        tmp.path(),
        &model,
        "",
        "[search]\ntrials = 3\n\n[search.params]\n\"train.learning_rate\" = \"loguniform(1e-3, 1e-5)\"\n",
    );
    let out = tunekit(&["search", cfg.to_str().unwrap()]);
    assert_bad_input(&out, &["train.learning_rate", "loguniform"]);
    // `train` on a config with a [search] section says what to do.
    let out = tunekit(&["train", cfg.to_str().unwrap()]);
    assert_bad_input(&out, &["[search]", "tunekit search"]);
}
