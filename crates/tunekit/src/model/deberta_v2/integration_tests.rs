//! DeBERTa-v2 through the generic model code (freezing / LLRD depths, int8, LoRA, pruning,
//! ONNX), on the transformers fixtures of `tools/make_arch_fixtures.py`; the parity tests
//! themselves are in `tests/arch_deberta.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};

use crate::model::backbone::{Backbone, LinearRole};
use crate::model::weights::{
    ClassifierSpec, DropoutOverride, HeadKind, classifier_tensors, encoder_shapes, load_classifier,
    to_vec,
};
use crate::model::{BertConfig, EncodedBatch, Family, Pooling, SequenceClassifier};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/arch")
        .join(name)
        .join("seq")
}

fn load(name: &str) -> (SequenceClassifier, BertConfig) {
    let dir = fixture(name);
    let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let spec = ClassifierSpec {
        num_labels: 3,
        pooling: Pooling::Cls,
        dropout: DropoutOverride::default(),
        seed: 1,
        require_head: true,
        head: HeadKind::Sequence,
    };
    let model = load_classifier(
        &dir.join("model.safetensors"),
        &config,
        &spec,
        &Device::flex(),
    )
    .unwrap()
    .0;
    (model, config)
}

/// A padded batch of two sequences (ids from the fixture's vocabulary).
fn batch() -> EncodedBatch {
    let device = Device::flex();
    let ids: Vec<i64> = vec![1, 73, 381, 38, 182, 5, 308, 2, 1, 212, 432, 2, 0, 0, 0, 0];
    let types: Vec<i64> = vec![0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    let mask: Vec<f32> = vec![
        1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 0., 0.,
    ];
    EncodedBatch {
        input_ids: Tensor::from_data(TensorData::new(ids, [2, 8]), &device),
        token_type_ids: Tensor::from_data(TensorData::new(types, [2, 8]), &device),
        attention_mask: Tensor::from_data(TensorData::new(mask, [2, 8]), &device),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

/// The relative table, its LayerNorm and the convolution block are shared by every layer:
/// frozen with the embeddings and given the embeddings' depth (`layers + 1`) by layer-wise LR
/// decay; layers count from the top as BERT's; the head is 0.
#[test]
fn deberta_shared_tensors_count_as_embeddings_for_freezing_and_llrd() {
    let names = Family::DebertaV2.names();
    for name in [
        "encoder.rel_embeddings.weight",
        "encoder.LayerNorm.weight",
        "encoder.conv.conv.weight",
        "encoder.conv.LayerNorm.bias",
        "embeddings.word_embeddings.weight",
    ] {
        assert_eq!(names.depth_of(name, 2), 3, "{name}");
        assert!(names.is_embedding(name), "{name}");
    }
    let q = "encoder.layer.1.attention.self.query_proj.weight";
    assert_eq!(names.depth_of(q, 2), 1);
    assert!(!names.is_embedding(q));
    assert_eq!(names.depth_of("encoder.layer.0.output.dense.bias", 2), 2);
    assert_eq!(names.depth_of("pooler.dense.weight", 2), 0);
    assert_eq!(names.depth_of("classifier.weight", 2), 0);
    // BERT's table has no shared tensors: nothing else changes there.
    assert!(Family::Bert.names().shared.is_empty());
}

/// `encoder_shapes` (what freezing, LLRD and `models inspect` enumerate) lists exactly the
/// encoder tensors the model writes, with their shapes, for both fixture configs.
#[test]
fn deberta_encoder_shapes_list_every_encoder_tensor() {
    for name in ["deberta-v2", "deberta-v2-v2style"] {
        let (model, config) = load(name);
        let written: BTreeMap<String, Vec<usize>> = classifier_tensors(&model)
            .unwrap()
            .into_iter()
            .filter_map(|(n, s, _)| n.strip_prefix("deberta.").map(|n| (n.to_string(), s)))
            .collect();
        let listed: BTreeMap<String, Vec<usize>> = encoder_shapes(&config).into_iter().collect();
        assert_eq!(listed, written, "{name}");
        let count: usize = written.values().map(|s| s.iter().product::<usize>()).sum();
        assert_eq!(config.encoder_param_count(false), count, "{name}");
    }
}

fn config_error(extra: serde_json::Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = serde_json::json!({
        "model_type": "deberta-v2", "vocab_size": 100, "hidden_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 20,
        "max_position_embeddings": 32, "relative_attention": true,
        "pos_att_type": ["p2c", "c2p"], "position_buckets": 8
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    match BertConfig::from_file(&dir.path().join("config.json")) {
        Ok(c) => format!(
            "OK type_vocab_size={} eps={}",
            c.type_vocab_size, c.layer_norm_eps
        ),
        Err(e) => e.to_string(),
    }
}

/// DeBERTa's own keys are read with `DebertaV2Config`'s defaults, and a value tunekit
/// cannot run is refused with the key's name.
#[test]
fn deberta_config_defaults_and_errors_name_the_key() {
    assert_eq!(
        config_error(serde_json::json!({})),
        "OK type_vocab_size=0 eps=0.0000001"
    );
    for (extra, key) in [
        (
            serde_json::json!({"pooler_hidden_act": "tanh"}),
            "pooler_hidden_act",
        ),
        (
            serde_json::json!({"pos_att_type": "c2p|p2p"}),
            "pos_att_type",
        ),
        (
            serde_json::json!({"conv_kernel_size": 2}),
            "conv_kernel_size",
        ),
        (
            serde_json::json!({"conv_kernel_size": 3, "conv_groups": 2}),
            "conv_groups",
        ),
        (
            serde_json::json!({"conv_kernel_size": 3, "conv_act": "swish"}),
            "conv_act",
        ),
        (serde_json::json!({"share_att_key": "yes"}), "share_att_key"),
        (
            serde_json::json!({"position_buckets": 1}),
            "position_buckets",
        ),
        (
            serde_json::json!({"pooler_hidden_size": 8}),
            "pooler_hidden_size",
        ),
        (
            serde_json::json!({"pruned_heads": {"0": [1]}}),
            "pruned_heads",
        ),
    ] {
        let err = config_error(extra.clone());
        assert!(
            err.contains(key) && !err.starts_with("OK"),
            "{extra}: {err}"
        );
    }
}

/// Head pruning is refused naming the architecture; ONNX export writes a graph; feed-forward
/// pruning works (smaller intermediate layers, a model that still runs).
#[test]
fn deberta_refuses_head_pruning_but_exports_onnx_and_prunes_neurons() {
    use crate::model::prune::{Importance, PruneOptions, prune};
    let (model, config) = load("deberta-v2");
    let device = Device::flex();
    let heads = PruneOptions {
        importance: Importance::Magnitude,
        heads: 0.5,
        ffn: 0.0,
        sparsity: None,
        per_layer: false,
    };
    let err = prune(model, &config, &heads, None, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("deberta-v2") && err.contains("head pruning"),
        "{err}"
    );

    // ONNX export writes a graph (its parity with ONNX Runtime: tunekit-cli's arch_export).
    let (model, config) = load("deberta-v2");
    let onnx = crate::export::onnx::to_onnx(&model, &config).unwrap();
    assert!(onnx.len() > 1000, "{} bytes", onnx.len());

    let ffn = PruneOptions {
        heads: 0.0,
        ffn: 0.5,
        ..heads
    };
    let (pruned, cfg, _) = prune(model, &config, &ffn, None, &device).unwrap();
    assert_eq!(cfg.intermediate_size, 18);
    assert_eq!(pruned.encoder.dims().intermediate_size, 18);
    let logits = to_vec(pruned.forward(&batch())).unwrap();
    assert!(logits.iter().all(|v| v.is_finite()) && logits.len() == 6);
}

/// Int8 weights of the six roles run in DeBERTa's forward (including the shared-key position
/// projections) and stay close to f32; LoRA targets `query_proj` / `value_proj` and leaves
/// the model unchanged at initialisation.
#[test]
fn deberta_int8_and_lora_use_the_backbone_roles() {
    for name in ["deberta-v2", "deberta-v2-v2style"] {
        let (model, config) = load(name);
        let f32_logits = to_vec(model.forward(&batch())).unwrap();
        let (int8, worst) = crate::model::quant::quantize_encoder(&model).unwrap();
        assert!(worst <= 1.0 / 254.0 + 1e-9);
        let mut q = load(name).0;
        q.encoder.set_int8(Some(std::sync::Arc::new(int8)));
        let q_logits = to_vec(q.forward(&batch())).unwrap();
        assert_ne!(q_logits, f32_logits, "{name}: int8 weights unused");
        assert!(cosine(&q_logits, &f32_logits) > 0.999, "{name}");

        let opts = crate::model::lora::LoraOptions {
            rank: 2,
            alpha: 4.0,
            dropout: 0.0,
            targets: vec![
                crate::model::lora::LoraTarget::Query,
                crate::model::lora::LoraTarget::Value,
            ],
        };
        let targets = opts.target_weights(&model.encoder);
        assert_eq!(
            targets.len(),
            2 * model.encoder.num_layers(),
            "{name}: {targets:?}"
        );
        assert!(
            targets
                .iter()
                .all(|t| t.contains("query_proj") || t.contains("value_proj"))
        );
        assert_eq!(
            crate::model::lora::LoraTarget::Query.peft_names(Family::DebertaV2.names()),
            vec!["query_proj".to_string()]
        );
        let lora = crate::model::lora::apply(model, &opts, &config);
        assert!(
            lora.encoder
                .linear(0, LinearRole::Query)
                .weight
                .adapter()
                .is_some()
        );
        let l_logits = to_vec(lora.forward(&batch())).unwrap();
        let diff = l_logits
            .iter()
            .zip(&f32_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{name}: LoRA at init changed logits by {diff}");
    }
}
