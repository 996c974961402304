//! DeBERTa-v2's own `config.json` keys (kept in [`BertConfig::extra`]), parsed into
//! [`DebertaOptions`] with errors naming the key. Defaults are `DebertaV2Config`'s
//! (transformers 5.24, `models/deberta_v2/configuration_deberta_v2.py`) and the getattr
//! defaults of `modeling_deberta_v2.py`.

use serde_json::Value;

use crate::model::config::BertConfig;
use crate::model::family::HeadActivation;

/// The convolution block after layer 0 (`ConvLayer`, deberta-v2-xlarge / -xxlarge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvOptions {
    /// `conv_kernel_size` (odd, so the output keeps the sequence length).
    pub kernel_size: usize,
    /// `conv_act` (`tanh` by default).
    pub act: HeadActivation,
}

/// DeBERTa-v2's network options beyond BERT's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct DebertaOptions {
    /// `relative_attention`: disentangled content/position terms and `encoder.rel_embeddings`.
    pub relative_attention: bool,
    /// `max_relative_positions`, resolved: `max_position_embeddings` when < 1.
    pub max_relative_positions: usize,
    /// `position_buckets` (`None` when ≤ 0: relative positions are not bucketed).
    pub position_buckets: Option<usize>,
    /// `"c2p"` in `pos_att_type`: content-to-position term.
    pub c2p: bool,
    /// `"p2c"` in `pos_att_type`: position-to-content term.
    pub p2c: bool,
    /// `share_att_key`: positions go through `query_proj` / `key_proj` (DeBERTa-v3) instead of
    /// `pos_query_proj` / `pos_key_proj`.
    pub share_att_key: bool,
    /// `"layer_norm"` in `norm_rel_ebd`: `encoder.LayerNorm` on the relative embeddings.
    pub norm_rel_ebd: bool,
    /// `position_biased_input`: absolute position embeddings added to the input.
    pub position_biased_input: bool,
    /// `pooler_hidden_act` of the sequence head's `ContextPooler`.
    pub pooler_hidden_act: HeadActivation,
    /// `pooler_dropout` (dropout on token 0 before `pooler.dense`).
    pub pooler_dropout: f64,
    /// `conv_kernel_size` > 0: the convolution block.
    pub conv: Option<ConvOptions>,
}

impl DebertaOptions {
    /// `pos_ebd_size` of the attention: rows of half the relative table, and the clamp of
    /// relative positions (`position_buckets` if set, else `max_relative_positions`).
    pub fn att_span(&self) -> usize {
        self.position_buckets.unwrap_or(self.max_relative_positions)
    }

    /// `scale_factor` of the attention scores: 1 + one per position term in `pos_att_type`
    /// (counted whether or not `relative_attention` is on, as transformers does).
    pub fn scale_factor(&self) -> usize {
        1 + usize::from(self.c2p) + usize::from(self.p2c)
    }

    /// The options of `config` (a `deberta-v2` config); an error message naming the key
    /// for a value tunekit cannot run.
    pub fn from_config(config: &BertConfig) -> Result<Self, String> {
        let x = &config.extra;
        let get = |k: &str| x.get(k).filter(|v| !v.is_null());
        let flag = |k: &str, default: bool| -> Result<bool, String> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| format!("{k}: expected true or false, found {v}")),
            }
        };
        let int = |k: &str, default: i64| -> Result<i64, String> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .as_i64()
                    .ok_or_else(|| format!("{k}: expected an integer, found {v}")),
            }
        };
        let text = |k: &str, default: &str| -> Result<String, String> {
            match get(k) {
                None => Ok(default.to_string()),
                Some(v) => v
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{k}: expected a string, found {v}")),
            }
        };
        let relative_attention = flag("relative_attention", false)?;
        let max_rel = int("max_relative_positions", -1)?;
        let max_relative_positions = if max_rel < 1 {
            config.max_position_embeddings
        } else {
            max_rel as usize
        };
        let buckets = int("position_buckets", -1)?;
        if buckets == 1 {
            return Err(
                "position_buckets: 1 leaves no bucket on either side (use ≥ 2, or ≤ 0 for none)"
                    .into(),
            );
        }
        let position_buckets = (buckets > 0).then_some(buckets as usize);
        let pos_att_type: Vec<String> = match get("pos_att_type") {
            None => Vec::new(),
            Some(Value::String(s)) => s
                .to_lowercase()
                .split('|')
                .map(|t| t.trim().to_string())
                .collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("pos_att_type: expected strings, found {v}"))
                })
                .collect::<Result<_, _>>()?,
            Some(v) => {
                return Err(format!(
                    "pos_att_type: expected a list or a `|`-joined string, found {v}"
                ));
            }
        };
        if let Some(bad) = pos_att_type
            .iter()
            .find(|t| !matches!(t.as_str(), "c2p" | "p2c" | "none" | ""))
        {
            return Err(format!(
                "pos_att_type: unsupported attention type `{bad}` (supported: c2p, p2c)"
            ));
        }
        let has = |t: &str| pos_att_type.iter().any(|p| p == t);
        let norm_rel_ebd = text("norm_rel_ebd", "none")?
            .to_lowercase()
            .split('|')
            .any(|t| t.trim() == "layer_norm");
        let pooler_act = text("pooler_hidden_act", "gelu")?;
        // The head's activation is the family table's ([`super::names::HEAD`]): GELU.
        if pooler_act != "gelu" {
            return Err(format!(
                "pooler_hidden_act: unsupported activation `{pooler_act}` (supported: gelu)"
            ));
        }
        let pooler_hidden_act = HeadActivation::Gelu;
        if let Some(v) = get("pooler_hidden_size")
            && v.as_u64() != Some(config.hidden_size as u64)
        {
            return Err(format!(
                "pooler_hidden_size: {v} differs from hidden_size {} (not supported)",
                config.hidden_size
            ));
        }
        if let Some(v) = get("attention_head_size")
            && v.as_u64() != Some(config.head_dim() as u64)
        {
            return Err(format!(
                "attention_head_size: {v} differs from hidden_size / num_attention_heads = {} (not supported)",
                config.head_dim()
            ));
        }
        let pooler_dropout = match get("pooler_dropout") {
            None => 0.0,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("pooler_dropout: expected a number, found {v}"))?,
        };
        let kernel = int("conv_kernel_size", 0)?;
        let conv = if kernel > 0 {
            if kernel % 2 == 0 {
                return Err(format!(
                    "conv_kernel_size: {kernel} is even; DeBERTa's ConvLayer keeps the sequence length only with an odd kernel"
                ));
            }
            let groups = int("conv_groups", 1)?;
            if groups != 1 {
                return Err(format!("conv_groups: {groups} is not supported (only 1)"));
            }
            let act = text("conv_act", "tanh")?;
            Some(ConvOptions {
                kernel_size: kernel as usize,
                act: head_activation(&act).ok_or_else(|| {
                    format!(
                        "conv_act: unsupported activation `{act}` (supported: gelu, tanh, relu)"
                    )
                })?,
            })
        } else {
            None
        };
        if relative_attention && position_buckets.is_none() && max_relative_positions == 0 {
            return Err("max_relative_positions: resolves to 0 relative positions".into());
        }
        Ok(DebertaOptions {
            relative_attention,
            max_relative_positions,
            position_buckets,
            c2p: has("c2p"),
            p2c: has("p2c"),
            share_att_key: flag("share_att_key", false)?,
            norm_rel_ebd,
            position_biased_input: flag("position_biased_input", true)?,
            pooler_hidden_act,
            pooler_dropout,
            conv,
        })
    }
}

/// An HF activation name (`ACT2FN` key) the head / convolution accepts.
fn head_activation(name: &str) -> Option<HeadActivation> {
    match name {
        "gelu" => Some(HeadActivation::Gelu),
        "tanh" => Some(HeadActivation::Tanh),
        "relu" => Some(HeadActivation::Relu),
        _ => None,
    }
}

/// `DebertaV2Config`'s defaults for keys BERT defaults differently, filled into a raw
/// `config.json` before it is read as a [`BertConfig`]: `type_vocab_size` 0 (no token-type
/// table) and `layer_norm_eps` 1e-7.
pub fn fill_defaults(value: &mut Value) {
    if let Some(map) = value.as_object_mut() {
        map.entry("type_vocab_size").or_insert(Value::from(0));
        map.entry("layer_norm_eps").or_insert(Value::from(1e-7));
    }
}

/// `config.json` problems only a DeBERTa config can have; `Ok` for a config tunekit runs.
pub fn validate(config: &BertConfig) -> Result<(), String> {
    if !config.pruned_heads.is_empty() {
        return Err(
            "pruned_heads: head pruning is not supported for deberta-v2 (transformers' DebertaV2Model has no pruned heads either)"
                .into(),
        );
    }
    DebertaOptions::from_config(config).map(|_| ())
}
