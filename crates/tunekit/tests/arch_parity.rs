//! Numerical parity with `transformers` for every BERT-shaped encoder family (RoBERTa,
//! XLM-RoBERTa, DistilBERT, ELECTRA, MPNet): tiny random models and transformers' outputs made
//! by `tools/make_arch_fixtures.py` (`tests/fixtures/arch/<model_type>/`). For each family:
//! last hidden states, sequence-classification logits and token-classification logits of a
//! padded batch of sentences, a padded batch of sentence pairs and each example alone, within
//! cosine ≥ 0.9999 and max |diff| ≤ 1e-4 (f32 on different kernels; hidden states and token
//! logits compared on real tokens); the tokenizer reproduces transformers' input ids; and the
//! weights tunekit writes back are the file's tensors, name for name and value for value.

mod common;

use std::path::Path;

use burn::tensor::Device;
use common::{batch, expected, fixture, ints};
use serde_json::Value;
use tunekit::model::weights::{
    ClassifierSpec, DropoutOverride, HeadKind, classifier_tensors, load_classifier, to_vec,
};
use tunekit::model::{BertConfig, Pooling, SequenceClassifier};
use tunekit::tokenize::TextTokenizer;

const FAMILIES: [&str; 5] = ["roberta", "xlm-roberta", "distilbert", "electra", "mpnet"];

fn load(name: &str, sub: &str, head: HeadKind, labels: usize) -> (SequenceClassifier, BertConfig) {
    let dir = fixture(name).join(sub);
    let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let spec = ClassifierSpec {
        head,
        num_labels: labels,
        pooling: Pooling::Cls,
        dropout: DropoutOverride::default(),
        seed: 0,
        require_head: true,
    };
    let (model, report) = load_classifier(
        &dir.join("model.safetensors"),
        &config,
        &spec,
        &Device::flex(),
    )
    .unwrap();
    assert!(
        !report.classifier_initialized && !report.pooler_initialized,
        "{name}/{sub}"
    );
    assert!(
        report.unused_tensors.is_empty(),
        "{name}/{sub}: unused {:?}",
        report.unused_tensors
    );
    (model, config)
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(floats).collect(),
        x => vec![x.as_f64().unwrap() as f32],
    }
}

/// Cosine and max |diff| over the rows kept by `keep` (per row of `width` values).
fn compare_kept(got: &[f32], want: &[f32], width: usize, keep: &[bool]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let (mut dot, mut na, mut nb, mut max) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (row, k) in keep.iter().enumerate() {
        if !k {
            continue;
        }
        for i in row * width..(row + 1) * width {
            let (a, b) = (f64::from(got[i]), f64::from(want[i]));
            dot += a * b;
            na += a * a;
            nb += b * b;
            max = max.max((a - b).abs());
        }
    }
    (dot / (na.sqrt() * nb.sqrt()), max)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], width: usize, keep: &[bool]) {
    let (cosine, max) = compare_kept(got, want, width, keep);
    assert!(
        cosine >= 0.9999 && max <= 1e-4,
        "{what}: cosine {cosine}, max |diff| {max}"
    );
}

#[test]
fn bert_shaped_families_match_transformers_hidden_states_and_both_heads() {
    for name in FAMILIES {
        let fx = expected(name);
        assert_eq!(fx["model_type"], name);
        let (seq, config) = load(name, "seq", HeadKind::Sequence, 3);
        let (token, _) = load(name, "token", HeadKind::Token, 5);
        let hidden_size = config.hidden_size;
        for case in fx["cases"].as_array().unwrap() {
            let label = format!("{name}/{}", case["name"].as_str().unwrap());
            let (b, _) = batch(case);
            let keep: Vec<bool> = ints(&case["attention_mask"])
                .iter()
                .flatten()
                .map(|&m| m == 1)
                .collect();
            let hidden = to_vec(seq.encoder.forward(&b)).unwrap();
            assert_close(
                &format!("{label} hidden"),
                &hidden,
                &floats(&case["hidden"]),
                hidden_size,
                &keep,
            );
            let logits = to_vec(seq.forward(&b)).unwrap();
            let rows = vec![true; logits.len() / 3];
            assert_close(
                &format!("{label} seq logits"),
                &logits,
                &floats(&case["seq_logits"]),
                3,
                &rows,
            );
            let tags = to_vec(tunekit::task::predict::token_logits(&token, &b)).unwrap();
            assert_close(
                &format!("{label} token logits"),
                &tags,
                &floats(&case["token_logits"]),
                5,
                &keep,
            );
        }
    }
}

#[test]
fn each_familys_tokenizer_reproduces_transformers_input_ids() {
    for name in FAMILIES {
        let fx = expected(name);
        let dir = fixture(name).join("seq");
        let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
        let tok = TextTokenizer::for_model(&dir.join("tokenizer.json"), 60, &config).unwrap();
        for case in fx["cases"].as_array().unwrap() {
            let texts: Vec<&str> = case["texts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            let pairs: Option<Vec<&str>> = case["pairs"]
                .as_array()
                .map(|p| p.iter().map(|t| t.as_str().unwrap()).collect());
            let got = tok.encode_batch(&texts, pairs.as_deref()).unwrap();
            let ids = ints(&case["input_ids"]);
            let mask = ints(&case["attention_mask"]);
            let types = ints(&case["token_type_ids"]);
            for (row, t) in got.iter().enumerate() {
                let n = mask[row].iter().filter(|&&m| m == 1).count();
                let want: Vec<u32> = ids[row][..n].iter().map(|&i| i as u32).collect();
                assert_eq!(t.ids, want, "{name}/{} row {row}", case["name"]);
                if case["token_type_ids_returned"] == true {
                    let want: Vec<u32> = types[row][..n].iter().map(|&i| i as u32).collect();
                    assert_eq!(t.type_ids, want, "{name}/{} types", case["name"]);
                }
            }
        }
        assert_eq!(
            i64::from(tok.pad_id()),
            fx["pad_token_id"].as_i64().unwrap(),
            "{name} pad id"
        );
    }
}

#[test]
fn weights_written_back_are_the_files_tensors_for_every_family() {
    for name in FAMILIES {
        for (sub, head, labels) in [
            ("seq", HeadKind::Sequence, 3),
            ("token", HeadKind::Token, 5),
        ] {
            let (model, _) = load(name, sub, head, labels);
            let written = classifier_tensors(&model).unwrap();
            let bytes = std::fs::read(fixture(name).join(sub).join("model.safetensors")).unwrap();
            let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut file_names: Vec<String> = file
                .names()
                .into_iter()
                .filter(|n| !n.ends_with("position_ids"))
                .map(|n| n.to_string())
                .collect();
            file_names.sort();
            let mut names: Vec<String> = written.iter().map(|t| t.0.clone()).collect();
            names.sort();
            assert_eq!(names, file_names, "{name}/{sub}: tensor names");
            for (n, shape, values) in &written {
                let view = file.tensor(n).unwrap();
                assert_eq!(view.shape(), shape.as_slice(), "{name}/{sub} {n}");
                let stored: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                assert_eq!(&stored, values, "{name}/{sub} {n}");
            }
        }
    }
}

/// The same model from `pytorch_model.bin` (burn's pickle reader; `tools/make_bin_fixture.py`)
/// and from a sharded `model.safetensors.index.json` (two shards written here) gives exactly
/// the logits of `model.safetensors`; a shard that lacks a tensor its index names is an error
/// naming both.
#[test]
fn pytorch_bin_and_sharded_safetensors_load_the_same_model() {
    use tunekit::model::ModelDir;
    let src = fixture("distilbert").join("seq");
    let fx = expected("distilbert");
    let case = &fx["cases"][0];
    let logits_of = |dir: &Path| {
        let m = ModelDir::open(dir.to_str().unwrap()).unwrap();
        let spec = ClassifierSpec {
            head: HeadKind::Sequence,
            num_labels: 3,
            pooling: Pooling::Cls,
            dropout: DropoutOverride::default(),
            seed: 0,
            require_head: true,
        };
        let model = load_classifier(&m.weights_path(), &m.config, &spec, &Device::flex())
            .unwrap()
            .0;
        (
            m.weights_path(),
            to_vec(model.forward(&batch(case).0)).unwrap(),
        )
    };
    let (path, want) = logits_of(&src);
    assert!(path.ends_with("model.safetensors"));
    let tmp = tempfile::tempdir().unwrap();
    let copy_side_files = |dir: &Path| {
        std::fs::create_dir_all(dir).unwrap();
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
    };
    // pytorch_model.bin.
    let bin = tmp.path().join("bin");
    copy_side_files(&bin);
    std::fs::copy(
        fixture("distilbert").join("pytorch_model.bin"),
        bin.join("pytorch_model.bin"),
    )
    .unwrap();
    let (path, got) = logits_of(&bin);
    assert!(path.ends_with("pytorch_model.bin"));
    assert_eq!(got, want, "pytorch_model.bin");
    // Two shards and their index.
    let sharded = tmp.path().join("sharded");
    copy_side_files(&sharded);
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = file.names().into_iter().map(|n| n.to_string()).collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (shard, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = part
            .iter()
            .map(|n| (n.clone(), file.tensor(n).unwrap()))
            .collect();
        std::fs::write(
            sharded.join(shard),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        for n in part {
            map.insert(n.clone(), serde_json::json!(shard));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let (path, got) = logits_of(&sharded);
    assert!(path.ends_with("model.safetensors.index.json"));
    assert_eq!(got, want, "sharded");
    // An index naming a tensor its shard does not hold.
    map.insert(
        "distilbert.extra.weight".into(),
        serde_json::json!("model-00001-of-00002.safetensors"),
    );
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let m = ModelDir::open(sharded.to_str().unwrap()).unwrap();
    let err = tunekit::model::weights::WeightFile::open(&m.weights_path())
        .err()
        .expect("a tensor missing from its shard")
        .to_string();
    assert!(
        err.contains("distilbert.extra.weight") && err.contains("model-00001-of-00002"),
        "{err}"
    );
}
