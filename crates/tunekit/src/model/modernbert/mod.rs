//! ModernBERT (`model_type = "modernbert"`): a pre-norm encoder with its own block, behind the
//! [`super::Backbone`] seam as [`super::Encoder::ModernBert`]. Source: transformers 5.24
//! `models/modernbert/modeling_modernbert.py`, its eager padded path (transformers 5 has no
//! unpadded path; flash-attention is never chosen on a CPU):
//!
//! - embeddings: `embeddings.tok_embeddings` → `embeddings.norm` (LayerNorm, no bias unless
//!   `norm_bias`) → dropout (`embedding_dropout`); no position or token-type tables;
//! - layer `i`: `x + attn(attn_norm(x))` then `x + mlp(mlp_norm(x))`; layer 0's `attn_norm` is
//!   the identity (no tensor);
//! - attention: one fused projection `attn.Wqkv` `[3·hidden, hidden]` (query, key, value in
//!   that order, heads inside each), rotary position embeddings on query and key (θ =
//!   `rope_parameters.full_attention.rope_theta` / `global_rope_theta` in global layers,
//!   `…sliding_attention…` / `local_rope_theta` in local ones), scaled dot product, `attn.Wo`;
//!   local layers (`layer_types`, else `i % global_attn_every_n_layers != 0`) see only keys
//!   with `|query − key| ≤ local_attention / 2`;
//! - MLP (GeGLU): `mlp.Wi` `[2·intermediate, hidden]` → first half `input`, second half `gate`
//!   → `act(input) · gate` → dropout → `mlp.Wo`;
//! - `final_norm` after the last layer.
//!
//! Heads (`ModernBertPredictionHead`): `head.dense` (bias if `classifier_bias`) →
//! `classifier_activation` → `head.norm`, on the pooled vector (`classifier_pooling`: token 0 or
//! the masked mean) for sequence classification and on every token for token classification,
//! then `drop` → `classifier`. tunekit's [`super::Pooler`] with a norm and
//! [`super::family::SequenceHead::prediction_head`] runs it.
//!
//! What the generic code gets through the seam: query, key and value are all the fused
//! `attn.Wqkv` (LoRA's query/key/value targets adapt that one module — PEFT's `Wqkv`), the
//! attention output is `attn.Wo`, the feed-forward pair `mlp.Wi` / `mlp.Wo`. Int8 quantisation
//! and structured pruning are refused by name ([`super::Feature`]); the ONNX exporter writes
//! this forward pass op by op (`crate::export::onnx`, from [`rotary_table`]'s values).

mod network;

use serde_json::{Map, Value};

pub use network::{ModernBert, ModernBertLayer, encoder_shapes, load, rotary_table, tensors};

use super::bert::Pooling;
use super::config::BertConfig;
use super::family::{HeadActivation, Names, Positions, SequenceHead};
use crate::error::{Error, Result};

/// ModernBERT's table. Query, key and value are one module (`attn.Wqkv`); there is no
/// position-embedding table (rotary), no token types and no pooler.
pub const NAMES: Names = Names {
    model_type: "modernbert",
    prefix: "model.",
    classes: [
        "ModernBertModel",
        "ModernBertForSequenceClassification",
        "ModernBertForTokenClassification",
    ],
    word_embeddings: "embeddings.tok_embeddings",
    // Rotary position embeddings: no table (read by the BERT-shaped loader only).
    position_embeddings: "",
    token_type_embeddings: None,
    embeddings_layer_norm: "embeddings.norm",
    embeddings_project: None,
    relative_attention_bias: None,
    positions: Positions::Absolute,
    layers: "layers",
    linears: [
        "attn.Wqkv",
        "attn.Wqkv",
        "attn.Wqkv",
        "attn.Wo",
        "mlp.Wi",
        "mlp.Wo",
    ],
    attention_layer_norm: "attn_norm",
    output_layer_norm: "mlp_norm",
    pooler: None,
    sequence_head: SequenceHead {
        dense: "head.dense",
        dense_in_base: false,
        // The default `classifier_activation`; the config's own is read by [`head_layout`].
        activation: HeadActivation::Gelu,
        dropout_before_dense: false,
        out: "classifier",
        norm: Some("head.norm"),
        prediction_head: true,
    },
    // Query and value are both the fused projection.
    lora_targets: ["Wqkv", "Wqkv"],
    config_aliases: &[
        ("norm_eps", "layer_norm_eps"),
        ("hidden_activation", "hidden_act"),
        ("attention_dropout", "attention_probs_dropout_prob"),
        ("classifier_dropout", "hidden_dropout_prob"),
    ],
    // `final_norm` is above the top layer: depth 0, with the head.
    shared: &[],
};

/// Which attention a layer runs (HF `layer_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKind {
    /// `full_attention`: every key, rotary θ of the global layers.
    Global,
    /// `sliding_attention`: keys within `local_attention / 2` positions, rotary θ of the local
    /// layers.
    Local,
}

/// ModernBERT's own `config.json` options (what [`BertConfig`] has no field for), read from
/// [`BertConfig::extra`] with transformers' defaults; a key of the wrong type or value is an
/// error naming it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModernBertOptions {
    /// Attention of each layer (`layer_types`, else from `global_attn_every_n_layers`).
    pub layer_types: Vec<AttentionKind>,
    /// Rotary θ of global layers (`rope_parameters.full_attention.rope_theta`, else
    /// `global_rope_theta`, default 160000).
    pub global_rope_theta: f64,
    /// Rotary θ of local layers (`rope_parameters.sliding_attention.rope_theta`, else
    /// `local_rope_theta`, default 10000).
    pub local_rope_theta: f64,
    /// `local_attention`: the whole window of a local layer (default 128); a query sees keys
    /// at most `local_attention / 2` positions away.
    pub local_attention: usize,
    /// `norm_bias`: whether the LayerNorms have a bias (default false).
    pub norm_bias: bool,
    /// `attention_bias`: whether `Wqkv` and `Wo` have biases (default false).
    pub attention_bias: bool,
    /// `mlp_bias`: whether `Wi` and `Wo` of the MLP have biases (default false).
    pub mlp_bias: bool,
    /// `classifier_pooling`: `cls` (token 0) or `mean` (masked mean), default `cls`.
    pub classifier_pooling: Pooling,
    /// `classifier_activation` of the prediction head (default `gelu`).
    pub classifier_activation: HeadActivation,
    /// `classifier_bias`: whether `head.dense` has a bias (default false).
    pub classifier_bias: bool,
    /// `embedding_dropout` (default 0).
    pub embedding_dropout: f64,
    /// `mlp_dropout` (default 0).
    pub mlp_dropout: f64,
}

fn get_bool(extra: &Map<String, Value>, key: &str, default: bool) -> Result<bool, String> {
    match extra.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(format!("{key}: expected true or false, found {v}")),
    }
}

fn get_f64(extra: &Map<String, Value>, key: &str, default: f64) -> Result<f64, String> {
    match extra.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| format!("{key}: expected a non-negative number, found {v}")),
    }
}

fn get_usize(extra: &Map<String, Value>, key: &str, default: usize) -> Result<usize, String> {
    match extra.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| format!("{key}: expected a non-negative integer, found {v}")),
    }
}

fn get_str<'a>(
    extra: &'a Map<String, Value>,
    key: &str,
    default: &'a str,
) -> Result<&'a str, String> {
    match extra.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(format!("{key}: expected a string, found {v}")),
    }
}

/// Rotary θ of one layer type: `rope_parameters.<kind>.rope_theta` (only `rope_type
/// "default"` is implemented), else `fallback_key`, else `default`.
fn rope_theta(
    extra: &Map<String, Value>,
    kind: &str,
    fallback_key: &str,
    default: f64,
) -> Result<f64, String> {
    if let Some(v) = extra.get("rope_scaling").filter(|v| !v.is_null()) {
        return Err(format!(
            "rope_scaling: {v}: scaled rotary embeddings are not implemented for modernbert"
        ));
    }
    let params = match extra.get("rope_parameters") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => m.get(kind).filter(|v| !v.is_null()),
        Some(v) => return Err(format!("rope_parameters: expected an object, found {v}")),
    };
    let Some(params) = params else {
        return get_f64(extra, fallback_key, default);
    };
    let key = format!("rope_parameters.{kind}");
    let Some(p) = params.as_object() else {
        return Err(format!("{key}: expected an object, found {params}"));
    };
    match p
        .get("rope_type")
        .and_then(Value::as_str)
        .unwrap_or("default")
    {
        "default" => {}
        other => {
            return Err(format!(
                "{key}.rope_type: `{other}` is not implemented for modernbert (supported: default)"
            ));
        }
    }
    match p.get("rope_theta") {
        None | Some(Value::Null) => get_f64(extra, fallback_key, default),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| format!("{key}.rope_theta: expected a positive number, found {v}")),
    }
}

impl ModernBertOptions {
    /// The options of `config` (a `modernbert` config); `Err` names the key.
    pub fn from_config(config: &BertConfig) -> Result<Self, String> {
        let extra: Map<String, Value> = config.extra.clone().into_iter().collect();
        let layers = config.num_hidden_layers;
        let layer_types = match extra.get("layer_types") {
            None | Some(Value::Null) => {
                let every = get_usize(&extra, "global_attn_every_n_layers", 3)?;
                if every == 0 {
                    return Err("global_attn_every_n_layers must be at least 1".into());
                }
                (0..layers)
                    .map(|i| {
                        if i % every != 0 {
                            AttentionKind::Local
                        } else {
                            AttentionKind::Global
                        }
                    })
                    .collect()
            }
            Some(Value::Array(kinds)) => {
                // A longer list is a distillation student's (the first layers of its teacher).
                if kinds.len() < layers {
                    return Err(format!(
                        "layer_types: {} entries for num_hidden_layers {layers}",
                        kinds.len()
                    ));
                }
                kinds
                    .iter()
                    .take(layers)
                    .enumerate()
                    .map(|(i, k)| match k.as_str() {
                        Some("full_attention") => Ok(AttentionKind::Global),
                        Some("sliding_attention") => Ok(AttentionKind::Local),
                        _ => Err(format!(
                            "layer_types[{i}]: expected \"full_attention\" or \"sliding_attention\", found {k}"
                        )),
                    })
                    .collect::<Result<Vec<_>, String>>()?
            }
            Some(v) => return Err(format!("layer_types: expected a list, found {v}")),
        };
        let classifier_pooling = match get_str(&extra, "classifier_pooling", "cls")? {
            "cls" => Pooling::Cls,
            "mean" => Pooling::Mean,
            other => {
                return Err(format!(
                    "classifier_pooling: `{other}` is not one of cls, mean"
                ));
            }
        };
        let classifier_activation = match get_str(&extra, "classifier_activation", "gelu")? {
            "gelu" => HeadActivation::Gelu,
            "tanh" => HeadActivation::Tanh,
            "relu" => HeadActivation::Relu,
            other => {
                return Err(format!(
                    "classifier_activation: `{other}` is not implemented (supported: gelu, tanh, relu)"
                ));
            }
        };
        if !config.pruned_heads.is_empty() {
            return Err("pruned_heads: modernbert models cannot have pruned heads".into());
        }
        if config.hidden_act != "gelu" && config.hidden_act != "relu" {
            // gelu_new / gelu_pytorch_tanh would pass BERT's check; ModernBERT's GeGLU is
            // implemented with exact GELU and ReLU only.
            if !matches!(config.hidden_act.as_str(), "gelu_new" | "gelu_pytorch_tanh") {
                return Err(format!(
                    "hidden_activation: `{}` is not implemented (supported: gelu, gelu_new, gelu_pytorch_tanh, relu)",
                    config.hidden_act
                ));
            }
        }
        Ok(ModernBertOptions {
            layer_types,
            global_rope_theta: rope_theta(
                &extra,
                "full_attention",
                "global_rope_theta",
                160_000.0,
            )?,
            local_rope_theta: rope_theta(
                &extra,
                "sliding_attention",
                "local_rope_theta",
                10_000.0,
            )?,
            local_attention: get_usize(&extra, "local_attention", 128)?,
            norm_bias: get_bool(&extra, "norm_bias", false)?,
            attention_bias: get_bool(&extra, "attention_bias", false)?,
            mlp_bias: get_bool(&extra, "mlp_bias", false)?,
            classifier_pooling,
            classifier_activation,
            classifier_bias: get_bool(&extra, "classifier_bias", false)?,
            embedding_dropout: get_f64(&extra, "embedding_dropout", 0.0)?,
            mlp_dropout: get_f64(&extra, "mlp_dropout", 0.0)?,
        })
    }

    /// The options of `config`, as a model error naming the file's key.
    pub fn of(config: &BertConfig) -> Result<Self> {
        Self::from_config(config).map_err(|m| Error::Model(format!("modernbert config.json: {m}")))
    }
}

/// transformers' defaults for the ModernBERT keys that tunekit reads under BERT's names
/// (`norm_eps` 1e-5, `hidden_activation` gelu, `attention_dropout` and `classifier_dropout`
/// 0), inserted when a config lacks them so BERT's defaults (1e-12, 0.1) never apply.
pub fn fill_config_defaults(map: &mut Map<String, Value>) {
    for (key, value) in [
        ("norm_eps", serde_json::json!(1e-5)),
        ("hidden_activation", serde_json::json!("gelu")),
        ("attention_dropout", serde_json::json!(0.0)),
        ("classifier_dropout", serde_json::json!(0.0)),
    ] {
        map.entry(key.to_string()).or_insert(value);
    }
}

/// The last touches on a ModernBERT `config.json` written by [`BertConfig::to_json`]:
/// `layer_types` cut to `num_hidden_layers` (a distillation student keeps its teacher's first
/// layers, and transformers wants one entry per layer).
pub fn finish_config_json(config: &BertConfig, map: &mut Map<String, Value>) {
    if let Some(Value::Array(kinds)) = map.get_mut("layer_types") {
        kinds.truncate(config.num_hidden_layers);
    }
}

/// The prediction head's layout from the config: whether `head.dense` has a bias
/// (`classifier_bias`), whether `head.norm` has one (`norm_bias`), and the activation
/// (`classifier_activation`).
pub fn head_layout(config: &BertConfig) -> Result<(bool, bool, HeadActivation)> {
    let o = ModernBertOptions::of(config)?;
    Ok((o.classifier_bias, o.norm_bias, o.classifier_activation))
}

/// ModernBERT's `classifier_pooling` value (`"cls"`, `"mean"`) for a model of `family` that
/// runs `pooling`, to write into an exported `config.json` so that transformers pools as tunekit
/// did; `None` for other families (their HF heads always read token 0).
pub fn classifier_pooling(family: super::Family, pooling: Pooling) -> Option<&'static str> {
    (family == super::Family::ModernBert).then_some(match pooling {
        Pooling::Cls => "cls",
        Pooling::Mean => "mean",
    })
}

/// Why int8 quantisation and structured pruning are refused (see the module docs).
pub(crate) fn unsupported(feature: super::Feature) -> String {
    let why = match feature {
        super::Feature::Int8 => {
            "its fused Wqkv and GeGLU Wi do not fit the int8 encoder's six BERT projections per layer"
        }
        super::Feature::StructuredPruning => {
            "removing heads from the fused Wqkv and neurons from both halves of the GeGLU Wi is not implemented"
        }
    };
    format!(
        "{} is not supported for modernbert models: {why}",
        feature.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> BertConfig {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = serde_json::json!({
            "model_type": "modernbert", "vocab_size": 50, "hidden_size": 16,
            "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 24,
            "max_position_embeddings": 64, "pad_token_id": 3
        });
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let path = dir.path().join("config.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        BertConfig::from_file(&path).unwrap()
    }

    /// A config written before `layer_types` / `rope_parameters` (ModernBERT-base's): layer
    /// kinds from `global_attn_every_n_layers`, θ from `global_rope_theta` /
    /// `local_rope_theta`, and transformers' defaults for everything missing.
    #[test]
    fn modernbert_options_read_old_style_configs_with_transformers_defaults() {
        let c = config(serde_json::json!({
            "global_attn_every_n_layers": 2, "global_rope_theta": 1000.0, "local_rope_theta": 50.0
        }));
        let o = ModernBertOptions::from_config(&c).unwrap();
        use AttentionKind::{Global, Local};
        assert_eq!(o.layer_types, [Global, Local, Global, Local]);
        assert_eq!((o.global_rope_theta, o.local_rope_theta), (1000.0, 50.0));
        assert_eq!(o.local_attention, 128);
        assert!(!o.norm_bias && !o.attention_bias && !o.mlp_bias && !o.classifier_bias);
        assert_eq!(o.classifier_pooling, Pooling::Cls);
        assert_eq!(c.layer_norm_eps, 1e-5);
        assert_eq!(c.hidden_act, "gelu");
        assert_eq!(c.hidden_dropout_prob, 0.0);
        assert_eq!(c.type_vocab_size, 0);
        // Defaults: every third layer global, θ 160000 / 10000.
        let o = ModernBertOptions::from_config(&config(serde_json::json!({}))).unwrap();
        assert_eq!(o.layer_types, [Global, Local, Local, Global]);
        assert_eq!(
            (o.global_rope_theta, o.local_rope_theta),
            (160_000.0, 10_000.0)
        );
        // `rope_parameters` wins over the old keys.
        let c = config(serde_json::json!({
            "global_rope_theta": 1000.0,
            "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 7.0}}
        }));
        assert_eq!(
            ModernBertOptions::from_config(&c)
                .unwrap()
                .global_rope_theta,
            7.0
        );
    }

    /// A distillation student (first k layers) keeps the first k layer kinds, and writes them
    /// back cut to its depth.
    #[test]
    fn modernbert_student_config_keeps_its_layers_kinds() {
        let mut c = config(serde_json::json!({
            "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
        }));
        c.num_hidden_layers = 2;
        let o = ModernBertOptions::from_config(&c).unwrap();
        assert_eq!(o.layer_types, [AttentionKind::Global, AttentionKind::Local]);
        let json = c.to_json().unwrap();
        assert_eq!(json["layer_types"].as_array().unwrap().len(), 2);
    }
}
