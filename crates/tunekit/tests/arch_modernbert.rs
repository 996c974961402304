//! ModernBERT parity with transformers: the fixture of `tools/make_arch_fixtures.py`
//! (`arch/modernbert`: 3 layers, global / sliding / global attention with a window of ±4,
//! rotary θ 160000 / 10000, no biases, mean-pooled prediction head) reproduced by tunekit's
//! forward pass — last hidden states and both heads' logits, padded batches (real tokens
//! compared) and each example alone, sentence pairs included — plus the tokenizer's ids, a
//! lossless HF round trip of the tensors, and the features refused by name.

mod common;

use std::path::Path;

use burn::tensor::Device;
use common::*;
use safetensors::SafeTensors;
use serde_json::Value;
use tunekit::model::weights::{HeadKind, classifier_tensors, to_vec};
use tunekit::model::{BertConfig, Pooling};
use tunekit::task::predict::token_logits;
use tunekit::tokenize::TextTokenizer;

const NAME: &str = "modernbert";

/// Hidden states, sequence logits and token logits of every case match transformers (cosine
/// ≥ 0.9999, max |diff| ≤ 1e-4), padded and alone, pairs included; the sliding window really
/// matters in the longer cases (a window of ±4 over up to 43 tokens).
#[test]
fn modernbert_forward_matches_transformers() {
    let exp = expected(NAME);
    let seq = load(NAME, HeadKind::Sequence);
    let tok = load(NAME, HeadKind::Token);
    assert_eq!(seq.pooling, Pooling::Mean);
    let cases = exp["cases"].as_array().unwrap();
    assert!(cases.len() >= 4);
    assert!(cases.iter().any(|c| !c["pairs"].is_null()));
    // Longer than the window (9 keys) in the padded batches.
    assert!(
        cases
            .iter()
            .all(|c| !c["name"].as_str().unwrap().starts_with("batch")
                || ints(&c["input_ids"])[0].len() > 9)
    );
    for case in cases {
        let label = format!("{NAME}/{}", case["name"].as_str().unwrap());
        let (batch, mask) = batch(case);
        let hidden = seq.encoder.forward(&batch);
        let width = hidden.dims()[2];
        let (g, w) = real_tokens(&to_vec(hidden).unwrap(), &case["hidden"], &mask, width);
        let (m1, c1) = check(&format!("{label} hidden"), &g, &w);
        let logits = to_vec(seq.forward(&batch)).unwrap();
        let want: Vec<f32> = serde_json::from_value::<Vec<Vec<f32>>>(case["seq_logits"].clone())
            .unwrap()
            .concat();
        let (m2, c2) = check(&format!("{label} seq_logits"), &logits, &want);
        let token = to_vec(token_logits(&tok, &batch)).unwrap();
        let (g, w) = real_tokens(&token, &case["token_logits"], &mask, 5);
        let (m3, c3) = check(&format!("{label} token_logits"), &g, &w);
        eprintln!(
            "{label}: hidden {m1:.2e} / {c1:.9}, seq_logits {m2:.2e} / {c2:.9}, token_logits {m3:.2e} / {c3:.9} (max |diff| / cosine)"
        );
    }
}

/// Without the window (every layer global) the long cases come out different: the fixture
/// checks the sliding-window attention, not a model that never uses it.
#[test]
fn modernbert_sliding_window_changes_the_long_cases() {
    let exp = expected(NAME);
    let mut seq = load(NAME, HeadKind::Sequence);
    let tunekit::model::Encoder::ModernBert(m) = &mut seq.encoder else {
        panic!("not a ModernBERT encoder");
    };
    assert_eq!(
        m.layers.iter().map(|l| l.local).collect::<Vec<_>>(),
        [false, true, false]
    );
    m.half_window = usize::MAX / 2;
    let case = &exp["cases"].as_array().unwrap()[0];
    let (batch, mask) = batch(case);
    let hidden = seq.encoder.forward(&batch);
    let width = hidden.dims()[2];
    let (g, w) = real_tokens(&to_vec(hidden).unwrap(), &case["hidden"], &mask, width);
    let (max, _) = compare(&g, &w);
    assert!(max > 1e-3, "the window made no difference: {max:e}");
}

/// `TextTokenizer` (with the model's limits) gives the fixture's ids and padding id for
/// singles and pairs (`[CLS] A [SEP] B [SEP]`, byte-level BPE), segment ids all 0; `models
/// inspect` names the architecture and the tokenizer kind.
#[test]
fn modernbert_tokenizer_reproduces_transformers_ids() {
    let exp = expected(NAME);
    let dir = fixture(NAME).join("seq");
    let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let tok = TextTokenizer::for_model(&dir.join("tokenizer.json"), 64, &config).unwrap();
    // `models inspect` names the architecture and the tokenizer kind.
    let summary = tunekit::model::inspect(dir.to_str().unwrap(), 8, 64).unwrap();
    assert_eq!(summary.architecture, "ModernBertModel");
    assert_eq!(summary.tokenizer, "byte-level BPE");
    assert_eq!(summary.max_length, 64);
    assert_eq!(
        i64::from(tok.pad_id()),
        exp["pad_token_id"].as_i64().unwrap()
    );
    for case in exp["cases"].as_array().unwrap() {
        let texts: Vec<String> = serde_json::from_value(case["texts"].clone()).unwrap();
        let pairs: Option<Vec<String>> = serde_json::from_value(case["pairs"].clone()).unwrap();
        let t: Vec<&str> = texts.iter().map(String::as_str).collect();
        let p: Option<Vec<&str>> = pairs
            .as_ref()
            .map(|p| p.iter().map(String::as_str).collect());
        let got = tok.encode_batch(&t, p.as_deref()).unwrap();
        let ids = ints(&case["input_ids"]);
        let mask = ints(&case["attention_mask"]);
        for (row, g) in got.iter().enumerate() {
            let n = mask[row].iter().filter(|&&m| m == 1).count();
            let want: Vec<u32> = ids[row][..n].iter().map(|&i| i as u32).collect();
            assert_eq!(g.ids, want, "{NAME}/{} row {row}", case["name"]);
            assert_eq!(g.type_ids, vec![0; n], "{NAME}/{} row {row}", case["name"]);
            assert!(
                ids[row][n..]
                    .iter()
                    .all(|&i| i == exp["pad_token_id"].as_i64().unwrap())
            );
        }
    }
}

/// `classifier_tensors` of a loaded model is the fixture file, name for name and value for
/// value (so an export loads in transformers as `ModernBertFor…Classification`).
#[test]
fn modernbert_hf_tensors_round_trip_the_fixture_files() {
    for head in [HeadKind::Sequence, HeadKind::Token] {
        let model = load(NAME, head);
        let sub = if head == HeadKind::Sequence {
            "seq"
        } else {
            "token"
        };
        let bytes = std::fs::read(fixture(NAME).join(sub).join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut want: Vec<(String, Vec<usize>, Vec<f32>)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                let values = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (n, v.shape().to_vec(), values)
            })
            .collect();
        let mut got = classifier_tensors(&model).unwrap();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let names = |v: &[(String, Vec<usize>, Vec<f32>)]| {
            v.iter().map(|t| t.0.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&got), names(&want), "{sub}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.1, w.1, "{sub}: {}", g.0);
            assert_eq!(g.2, w.2, "{sub}: {}", g.0);
        }
    }
}

/// Int8 quantisation and structured pruning are refused with an error that names ModernBERT
/// and the feature (never a model with wrong numbers); unstructured pruning (zeroing weights)
/// still works and sees the fused `Wqkv` once.
#[test]
fn modernbert_refuses_int8_and_structured_pruning_by_name() {
    use tunekit::model::prune::{PruneOptions, prune};
    let model = load(NAME, HeadKind::Sequence);
    let err = tunekit::model::quant::quantize_encoder(&model)
        .unwrap_err()
        .to_string();
    assert!(err.contains("int8") && err.contains("modernbert"), "{err}");
    let config = BertConfig::from_file(&fixture(NAME).join("seq/config.json")).unwrap();
    let opts = PruneOptions {
        heads: 0.25,
        ..PruneOptions::default()
    };
    let err = prune(model, &config, &opts, None, &Device::flex())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("structured pruning") && err.contains("modernbert"),
        "{err}"
    );
    let model = load(NAME, HeadKind::Sequence);
    let opts = PruneOptions {
        sparsity: Some(0.5),
        ..PruneOptions::default()
    };
    let (pruned, _, report) = prune(model, &config, &opts, None, &Device::flex()).unwrap();
    assert!(
        (report.linear_sparsity - 0.5).abs() < 0.01,
        "{}",
        report.linear_sparsity
    );
    // The sparse (magnitude-pruned) model still exports to ONNX (the graph's parity with
    // ONNX Runtime is tunekit-cli's arch_export test).
    let onnx = tunekit::export::onnx::to_onnx(&pruned, &config).unwrap();
    assert!(onnx.len() > 1000, "{} bytes", onnx.len());
}

/// LoRA on ModernBERT: the query / key / value targets are the fused `Wqkv` (PEFT's `Wqkv`),
/// adapted once per layer; the adapter file names one `lora_A`/`lora_B` pair per layer.
#[test]
fn modernbert_lora_targets_the_fused_wqkv_once() {
    use tunekit::model::lora::{LoraOptions, LoraTarget, adapter_tensors, apply};
    let names = tunekit::model::Family::ModernBert.names();
    assert_eq!(LoraTarget::Query.peft_names(names), ["Wqkv"]);
    assert_eq!(LoraTarget::Value.peft_names(names), ["Wqkv"]);
    assert_eq!(LoraTarget::Output.peft_names(names), ["Wo"]);
    assert_eq!(LoraTarget::Intermediate.peft_names(names), ["Wi"]);
    assert_eq!(
        LoraTarget::from_peft_name("Wqkv", names),
        Some(LoraTarget::Query)
    );
    let model = load(NAME, HeadKind::Sequence);
    let config = BertConfig::from_file(&fixture(NAME).join("seq/config.json")).unwrap();
    let opts = LoraOptions {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: vec![LoraTarget::Query, LoraTarget::Value],
    };
    assert_eq!(
        opts.target_weights(&model.encoder),
        [
            "layers.0.attn.Wqkv.weight",
            "layers.1.attn.Wqkv.weight",
            "layers.2.attn.Wqkv.weight"
        ]
    );
    let model = apply(model, &opts, &config);
    let tensors = adapter_tensors(&model).unwrap();
    let lora: Vec<&str> = tensors
        .iter()
        .map(|t| t.0.as_str())
        .filter(|n| n.contains("lora_"))
        .collect();
    assert_eq!(lora.len(), 6, "{lora:?}");
    assert!(
        lora.iter().all(|n| n.contains(".attn.Wqkv.lora_")),
        "{lora:?}"
    );
    // The head (PEFT `modules_to_save`: `classifier` and `head`) is saved, its norm included.
    assert!(
        tensors
            .iter()
            .any(|t| t.0 == "base_model.model.head.norm.weight")
    );
}

/// A config key of the wrong kind is an error naming the key.
#[test]
fn modernbert_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(NAME).join("seq/config.json")).unwrap(),
    )
    .unwrap();
    for (key, value, needle) in [
        (
            "classifier_pooling",
            serde_json::json!("max"),
            "classifier_pooling",
        ),
        (
            "layer_types",
            serde_json::json!(["full_attention"]),
            "layer_types",
        ),
        (
            "classifier_activation",
            serde_json::json!("swish"),
            "classifier_activation",
        ),
        ("norm_bias", serde_json::json!("yes"), "norm_bias"),
        (
            "rope_parameters",
            serde_json::json!({"full_attention": {"rope_type": "yarn", "rope_theta": 1.0}}),
            "rope_parameters.full_attention.rope_type",
        ),
    ] {
        let mut cfg = base.clone();
        cfg[key] = value;
        let path = dir.path().join("config.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        let err = BertConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains(needle), "{key}: {err}");
    }
    // Written back in ModernBERT's own spelling.
    let config = BertConfig::from_file(&fixture(NAME).join("seq/config.json")).unwrap();
    assert_eq!(config.layer_norm_eps, 1e-5);
    let json = config.to_json().unwrap();
    for key in [
        "norm_eps",
        "hidden_activation",
        "attention_dropout",
        "classifier_dropout",
    ] {
        assert_eq!(json[key], base[key], "{key}");
    }
    for key in [
        "layer_norm_eps",
        "hidden_act",
        "type_vocab_size",
        "position_embedding_type",
    ] {
        assert!(json.get(key).is_none(), "{key}");
    }
}

/// `tunekit export --format hf` of both fixture models loads in transformers
/// (`AutoModelFor…Classification`, `tools/check_arch_export.py`) with tunekit's logits within
/// 1e-4 — the mean-pooled sequence head included, and a copy told to pool token 0 exports
/// `classifier_pooling = "cls"` so transformers pools as tunekit did; `--format onnx` writes
/// a graph.
#[test]
fn modernbert_hf_export_loads_in_transformers_with_the_same_logits() {
    use tunekit::export::{ExportFormat, export};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let texts = [
        "a gripping, beautifully shot film",
        "dull",
        "the plot goes nowhere, but the cast is wonderful and the score is lovely",
    ];
    // A copy of the sequence model whose tunekit.json says it was trained with cls pooling.
    let cls = tmp.path().join("seq-cls");
    std::fs::create_dir_all(&cls).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(fixture(NAME).join("seq").join(f), cls.join(f)).unwrap();
    }
    let meta = serde_json::json!({
        "pooling": "cls", "max_length": 64, "labels": ["NEG", "NEU", "POS"],
        "base_model": "fixture", "tunekit_version": "test"
    });
    std::fs::write(cls.join("tunekit.json"), meta.to_string()).unwrap();
    for (model, token, pooling) in [
        (fixture(NAME).join("seq"), false, "mean"),
        (fixture(NAME).join("token"), true, "mean"),
        (cls, false, "cls"),
    ] {
        let out = tmp.path().join(format!(
            "out-{}",
            model.file_name().unwrap().to_str().unwrap()
        ));
        export(model.to_str().unwrap(), ExportFormat::Hf, &out, &device).unwrap();
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["model_type"], "modernbert");
        if !token {
            assert_eq!(config["classifier_pooling"], pooling, "{}", out.display());
        }
        let p = tunekit::predictor::Predictor::load(out.to_str().unwrap(), None, &device).unwrap();
        assert_eq!(p.model.pooling.eq(&Pooling::Mean), pooling == "mean");
        let tokens = p.tokenizer.encode_batch(&texts, None).unwrap();
        let ids: Vec<Vec<u32>> = tokens.iter().map(|t| t.ids.clone()).collect();
        let mut logits = Vec::new();
        for t in &tokens {
            let batch = tunekit::batch::collate(&[t], p.tokenizer.pad_id(), &device);
            logits.push(if token {
                let l = token_logits(&p.model, &batch);
                let [_, seq, c] = l.dims();
                let flat = to_vec(l).unwrap();
                serde_json::json!(
                    (0..seq)
                        .map(|i| flat[i * c..(i + 1) * c].to_vec())
                        .collect::<Vec<_>>()
                )
            } else {
                serde_json::json!(to_vec(p.model.forward(&batch)).unwrap())
            });
        }
        let predictions = out.with_extension("predictions.json");
        let task = if token {
            "token_classification"
        } else {
            "sequence_classification"
        };
        let body = serde_json::json!({
            "task": task, "texts": texts, "pairs": null, "input_ids": ids, "logits": logits,
        });
        std::fs::write(&predictions, body.to_string()).unwrap();
        let o = std::process::Command::new("python3")
            .arg(root.join("tools/check_arch_export.py"))
            .args(["--model", out.to_str().unwrap()])
            .args(["--predictions", predictions.to_str().unwrap()])
            .output()
            .expect("python3");
        let stdout = String::from_utf8_lossy(&o.stdout);
        eprintln!("{}: {stdout}", out.display());
        assert!(
            o.status.success(),
            "transformers vs tunekit on {}: {stdout}{}",
            out.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // ONNX export writes a graph (its parity with ONNX Runtime: tunekit-cli's arch_export).
    let onnx = export(
        fixture(NAME).join("seq").to_str().unwrap(),
        ExportFormat::Onnx,
        &tmp.path().join("onnx"),
        &device,
    )
    .unwrap();
    assert!(onnx.is_file(), "{}", onnx.display());
}
