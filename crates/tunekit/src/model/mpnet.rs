//! MPNet (`model_type = "mpnet"`): BERT-shaped post-LayerNorm layers under `mpnet.` with
//! their own module names (`attention.attn.q/k/v/o`), no token types, RoBERTa's position ids
//! (`padding_idx` 1), and a relative position bias (`encoder.relative_attention_bias`,
//! `[buckets, heads]`) shared by every layer and added to the attention scores: bucket of
//! `key − query` as T5's bidirectional scheme with 32 buckets and `max_distance` 128
//! ([`relative_position_bucket`]). Classification head as RoBERTa's. Source: transformers
//! `models/mpnet/modeling_mpnet.py` (`MPNetEncoder.compute_position_bias`).

use super::bert::names as bert;
use super::family::{Names, Positions};

/// MPNet's table.
pub const NAMES: Names = Names {
    model_type: "mpnet",
    prefix: "mpnet.",
    classes: [
        "MPNetModel",
        "MPNetForSequenceClassification",
        "MPNetForTokenClassification",
    ],
    token_type_embeddings: None,
    relative_attention_bias: Some("encoder.relative_attention_bias"),
    positions: Positions::AfterPadding,
    linears: [
        "attention.attn.q",
        "attention.attn.k",
        "attention.attn.v",
        "attention.attn.o",
        "intermediate.dense",
        "output.dense",
    ],
    attention_layer_norm: "attention.LayerNorm",
    sequence_head: super::roberta::ROBERTA_HEAD,
    lora_targets: ["q", "v"],
    ..bert::NAMES
};

/// Buckets `MPNetEncoder.compute_position_bias` uses (its `num_buckets` argument, not the
/// config's `relative_attention_num_buckets`, which only sizes the table).
pub const BUCKETS: usize = 32;

/// Padding index of MPNet's position ids (hard-coded to 1 in `MPNetEmbeddings`).
pub const PADDING_IDX: usize = 1;

/// T5-style bidirectional bucket of `relative_position = key − query`, as
/// `MPNetEncoder.relative_position_bucket(num_buckets=32, max_distance=128)`: half the buckets
/// for each sign, exact below 8, logarithmic up to 128, computed in f32 as PyTorch does.
pub fn relative_position_bucket(relative_position: i64) -> usize {
    let num_buckets = (BUCKETS / 2) as i64;
    let max_exact = num_buckets / 2;
    let n = -relative_position;
    let mut ret = if n < 0 { num_buckets } else { 0 };
    let n = n.abs();
    if n < max_exact {
        ret += n;
    } else {
        let ratio = (n as f32 / max_exact as f32).ln() / (128.0f64 / max_exact as f64).ln() as f32;
        let large = max_exact + (ratio * (num_buckets - max_exact) as f32) as i64;
        ret += large.min(num_buckets - 1);
    }
    ret as usize
}

/// The bias `[heads, seq, seq]` (row-major) of one sequence length from the table `[buckets,
/// heads]` (row-major): `out[h][q][k] = table[bucket(k − q)][h]`.
pub fn position_bias(table: &[f32], heads: usize, seq: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; heads * seq * seq];
    for q in 0..seq {
        for k in 0..seq {
            let b = relative_position_bucket(k as i64 - q as i64);
            for h in 0..heads {
                out[(h * seq + q) * seq + k] = table.get(b * heads + h).copied().unwrap_or(0.0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets as PyTorch computes them (values printed by transformers'
    /// `MPNetEncoder.relative_position_bucket` for these offsets).
    #[test]
    fn relative_position_buckets_match_transformers() {
        let cases = [
            (0, 0),
            (1, 17),
            (-1, 1),
            (7, 23),
            (-7, 7),
            (8, 24),
            (-8, 8),
            (16, 26),
            (-16, 10),
            (40, 28),
            (-127, 15),
            (-500, 15),
            (500, 31),
        ];
        for (rel, want) in cases {
            assert_eq!(
                relative_position_bucket(rel),
                want,
                "relative position {rel}"
            );
        }
    }
}
