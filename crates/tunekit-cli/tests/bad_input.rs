//! Bad input of every kind the spine promises to catch: a clear message naming the file,
//! line, key or tensor, exit code 2, and never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Copy a model directory, then rewrite its weights with `edit` applied to the tensor list.
fn model_with_weights(
    src: &Path,
    dst: &Path,
    edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(
        dst.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    dst.to_path_buf()
}

fn embed(model: &Path) -> std::process::Output {
    let input = model.parent().unwrap().join("texts.txt");
    std::fs::write(&input, "text\nhello world\n").unwrap();
    tunekit(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ])
}

#[test]
fn missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = tiny_model(&tmp.path().join("tiny"));
    let m = model_with_weights(&tiny, &tmp.path().join("m"), |t| {
        t.retain(|(n, _, _)| n != "encoder.layer.1.attention.self.key.weight")
    });
    assert_bad_input(
        &embed(&m),
        &[
            "encoder.layer.1.attention.self.key.weight",
            "missing",
            "model.safetensors",
        ],
    );
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = tiny_model(&tmp.path().join("tiny"));
    let m = model_with_weights(&tiny, &tmp.path().join("m"), |t| {
        for (n, s, b) in t.iter_mut() {
            if n == "encoder.layer.0.intermediate.dense.weight" {
                *s = vec![32, 64];
                let _ = b;
            }
        }
    });
    assert_bad_input(
        &embed(&m),
        &[
            "encoder.layer.0.intermediate.dense.weight",
            "[64, 32]",
            "[32, 64]",
        ],
    );
}

#[test]
fn truncated_weights_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = tiny_model(&tmp.path().join("tiny"));
    let m = model_with_weights(&tiny, &tmp.path().join("m"), |_| {});
    let path = m.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_bad_input(&embed(&m), &["model.safetensors", "truncated"]);
}

#[test]
fn unknown_architecture_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tiny_model(&tmp.path().join("tiny"));
    let cfg = std::fs::read_to_string(m.join("config.json"))
        .unwrap()
        .replace("\"bert\"", "\"gpt2\"");
    std::fs::write(m.join("config.json"), cfg).unwrap();
    assert_bad_input(
        &embed(&m),
        &["config.json", "unsupported model_type `gpt2`"],
    );
    let out = tunekit(&["models", "inspect", m.to_str().unwrap()]);
    assert_bad_input(&out, &["gpt2"]);
}

#[test]
fn missing_model_is_reported_with_the_cache_searched() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tunekit_env(
        &["models", "inspect", "nobody/no-such-model"],
        &[("HF_HUB_CACHE", tmp.path().to_str().unwrap())],
    );
    assert_bad_input(&out, &["nobody/no-such-model"]);
}

/// Train with a data file replaced by a broken fixture; returns the output.
fn train_with(tmp: &Path, split: &str, file: &Path, extra: &[&str]) -> std::process::Output {
    let model = tiny_model(&tmp.join("tiny"));
    let cfg = tiny_config(tmp, &model, "epochs = 1");
    let set = format!("data.{split}={:?}", file.to_str().unwrap());
    let mut args = vec!["train", cfg.to_str().unwrap(), "--set", set.as_str()];
    args.extend_from_slice(extra);
    tunekit(&args)
}

#[test]
fn empty_data_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture("data/empty.tsv");
    assert_bad_input(&train_with(tmp.path(), "train", &f, &[]), &["empty.tsv"]);
    let f = fixture("data/header_only.tsv");
    assert_bad_input(
        &train_with(tmp.path(), "train", &f, &[]),
        &["header_only.tsv"],
    );
}

#[test]
fn missing_label_column_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture("data/no_label.tsv");
    assert_bad_input(
        &train_with(tmp.path(), "train", &f, &[]),
        &["no_label.tsv", "label"],
    );
}

#[test]
fn short_row_names_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture("data/short_row.tsv");
    assert_bad_input(
        &train_with(tmp.path(), "train", &f, &[]),
        &["short_row.tsv", "line 4"],
    );
}

#[test]
fn non_utf8_bytes_name_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture("data/latin1.tsv");
    assert_bad_input(
        &train_with(tmp.path(), "train", &f, &[]),
        &["latin1.tsv", "line 3"],
    );
}

#[test]
fn unknown_label_in_validation_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture("data/unknown_label.tsv");
    assert_bad_input(
        &train_with(tmp.path(), "validation", &f, &[]),
        &["unknown_label.tsv", "neutral"],
    );
}

#[test]
fn unknown_config_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny"));
    let cfg = tiny_config(tmp.path(), &model, "learning_rat = 0.1");
    let out = tunekit(&["train", cfg.to_str().unwrap()]);
    assert_bad_input(&out, &["tiny.toml", "learning_rat"]);
    let out = tunekit(&[
        "train",
        cfg.to_str()
            .unwrap()
            .replace("tiny.toml", "nope.toml")
            .as_str(),
    ]);
    assert_bad_input(&out, &["nope.toml"]);
}

#[test]
fn unknown_label_at_eval_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny"));
    let cfg = tiny_config(tmp.path(), &model, "epochs = 1\nmax_steps = 1");
    let out = tunekit(&["train", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = tmp.path().join("runs/tiny/model");
    let f = fixture("data/unknown_label.tsv");
    let out = tunekit(&[
        "eval",
        "--model",
        exported.to_str().unwrap(),
        "--data",
        f.to_str().unwrap(),
    ]);
    assert_bad_input(&out, &["unknown_label.tsv", "neutral"]);
    // A base model without a head cannot be evaluated.
    let out = tunekit(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        f.to_str().unwrap(),
    ]);
    assert_bad_input(&out, &["id2label"]);
}
