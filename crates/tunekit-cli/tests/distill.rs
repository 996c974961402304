//! `tunekit distill`: the student learns from the teacher's cached soft targets. Checked on
//! the weights: α = 0 is exactly ordinary training, α = 1 does not look at the labels at all,
//! and `student_layers` builds a shallower student from the teacher.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Train a tiny teacher; returns its exported model directory.
fn teacher(dir: &Path, model: &Path) -> PathBuf {
    let cfg = tiny_config(dir, model, "epochs = 1\nmax_steps = 6");
    let out = tunekit(&["train", cfg.to_str().unwrap(), "--set", "run.name=teacher"]);
    assert!(out.status.success(), "{}", stderr(&out));
    dir.join("runs/teacher/model")
}

/// A config for distilling into `model` (appended `[distill]` section).
fn distill_config(dir: &Path, model: &Path, teacher: &Path, distill: &str) -> PathBuf {
    let cfg = tiny_config(dir, model, "epochs = 1\nmax_steps = 4");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("\n[distill]\nteacher = {teacher:?}\n{distill}\n"));
    let path = dir.join("distill.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn weights(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("checkpoints/step-00000004/model.safetensors")).unwrap()
}

#[test]
fn alpha_zero_is_plain_training_and_alpha_one_ignores_the_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let teacher = teacher(tmp.path(), &model);
    let cfg = distill_config(tmp.path(), &model, &teacher, "alpha = 0.0");
    let out = tunekit_env(
        &["distill", cfg.to_str().unwrap(), "--set", "run.name=a0"],
        &[("RUST_LOG", "info")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("logits for 192 examples computed once"),
        "{}",
        stderr(&out)
    );
    let plain = tiny_config(tmp.path(), &model, "epochs = 1\nmax_steps = 4");
    let out = tunekit(&["train", plain.to_str().unwrap(), "--set", "run.name=plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs = tmp.path().join("runs");
    assert!(weights(&runs.join("a0")) == weights(&runs.join("plain")));

    // α = 1: the labels play no part, so flipping every training label changes nothing.
    let cfg = distill_config(
        tmp.path(),
        &model,
        &teacher,
        "alpha = 1.0\ntemperature = 3.0",
    );
    let out = tunekit(&["distill", cfg.to_str().unwrap(), "--set", "run.name=a1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let train = tmp.path().join("train.tsv");
    let flipped: String = std::fs::read_to_string(&train)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l}\n")
            } else if let Some(t) = l.strip_suffix("\tpositive") {
                format!("{t}\tnegative\n")
            } else {
                format!("{}\tpositive\n", l.strip_suffix("\tnegative").unwrap())
            }
        })
        .collect();
    let flipped_path = tmp.path().join("flipped.tsv");
    std::fs::write(&flipped_path, flipped).unwrap();
    let out = tunekit(&[
        "distill",
        cfg.to_str().unwrap(),
        "--set",
        "run.name=a1-flipped",
        "--set",
        &format!("data.train={:?}", flipped_path.to_str().unwrap()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(weights(&runs.join("a1")) == weights(&runs.join("a1-flipped")));
    assert!(weights(&runs.join("a1")) != weights(&runs.join("a0")));
}

#[test]
fn student_layers_make_a_shallower_student_from_the_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let teacher = teacher(tmp.path(), &model);
    // The student starts as the teacher's first layer (and its embeddings and head).
    let cfg = distill_config(tmp.path(), &teacher, &teacher, "student_layers = 1");
    let out = tunekit(&[
        "distill",
        cfg.to_str().unwrap(),
        "--set",
        "run.name=student",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = tmp.path().join("runs/student/model");
    assert_eq!(json(&exported.join("config.json"))["num_hidden_layers"], 1);
    let bytes = std::fs::read(exported.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    assert!(names.iter().any(|n| n.contains("encoder.layer.0.")));
    assert!(
        !names.iter().any(|n| n.contains("encoder.layer.1.")),
        "{names:?}"
    );
    // And it is a working model.
    let out = tunekit(&[
        "eval",
        "--model",
        exported.to_str().unwrap(),
        "--data",
        tmp.path().join("test.tsv").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn distill_and_train_each_refuse_the_other_kind_of_config() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let plain = tiny_config(tmp.path(), &model, "max_steps = 1");
    assert_bad_input(
        &tunekit(&["distill", plain.to_str().unwrap()]),
        &["[distill]"],
    );
    let cfg = distill_config(tmp.path(), &model, &model, "alpha = 0.5");
    assert_bad_input(
        &tunekit(&["train", cfg.to_str().unwrap()]),
        &["tunekit distill"],
    );
    assert_bad_input(
        &tunekit(&["distill", cfg.to_str().unwrap(), "--set", "distill.alpha=2"]),
        &["distill.alpha"],
    );
    // The pretrained encoder has no labels: not a teacher.
    let out = tunekit(&["distill", cfg.to_str().unwrap()]);
    assert_bad_input(&out, &["id2label"]);
}
