//! DeBERTa-v2 (`model_type = "deberta-v2"`, DeBERTa-v2 and DeBERTa-v3 checkpoints): the
//! network of transformers 5.24's `models/deberta_v2/modeling_deberta_v2.py`, operation by
//! operation, behind the [`Backbone`] seam.
//!
//! - Embeddings: word (+ absolute positions when `position_biased_input`) (+ token types when
//!   `type_vocab_size` > 0) → `embed_proj` (no bias, when `embedding_size` ≠ `hidden_size`) →
//!   LayerNorm → × attention mask → dropout.
//! - Disentangled self-attention: `softmax(Q·Kᵀ/s + c2p + p2c + mask)·V` with
//!   `s = sqrt(d · (1 + |pos_att_type|))`; content→position `c2p[i, j] = Q_i · PK[δ(i, j)] / s`
//!   and position→content `p2c[i, j] = K_j · PQ[δ(i, j)] / s`, where `PK` / `PQ` are the
//!   (LayerNormed, when `norm_rel_ebd` has `layer_norm`) relative embeddings through
//!   `key_proj` / `query_proj` (`share_att_key`) or `pos_key_proj` / `pos_query_proj`, and
//!   `δ(i, j) = clamp(r(i − j) + span, 0, 2·span − 1)` with `r` the log buckets of
//!   [`make_log_bucket_position`] when `position_buckets` > 0.
//! - Post-LayerNorm blocks as BERT's; the `ConvLayer` after layer 0 when `conv_kernel_size`
//!   is set (deberta-v2-xlarge).
//!
//! Padding: transformers masks padded queries too (their rows become uniform); tunekit masks
//! padded keys only, so the hidden states of padding positions differ (they are never read:
//! pooling takes token 0 or a masked mean, token heads score real tokens) while every real
//! token's state is the same.

use burn::module::{Module, Param};
use burn::nn::{Dropout, Embedding, LayerNorm, Linear};
use burn::tensor::activation::{gelu_approximate, relu};
use burn::tensor::{Int, Tensor, TensorData};

pub mod config;
#[cfg(test)]
mod integration_tests;
pub mod load;
pub mod names;

pub use config::DebertaOptions;

use super::backbone::{Backbone, BackboneDims, LinearRole};
use super::bert::{Activation, EncodedBatch, Projection, attention_bias, linear_2d, project};
use super::bf16::Precision;
use super::family::{HeadActivation, Names};
use super::fused;
use super::quant::QuantLinear;

/// `embeddings.*`.
#[derive(Module, Debug)]
pub struct DebertaEmbeddings {
    /// `embeddings.word_embeddings`.
    pub word_embeddings: Embedding,
    /// `embeddings.position_embeddings` (only with `position_biased_input`).
    pub position_embeddings: Option<Embedding>,
    /// `embeddings.token_type_embeddings` (only with `type_vocab_size` > 0).
    pub token_type_embeddings: Option<Embedding>,
    /// `embeddings.embed_proj` (no bias), when `embedding_size` ≠ `hidden_size`.
    pub embed_proj: Option<Linear>,
    /// `embeddings.LayerNorm`.
    pub layer_norm: LayerNorm,
    /// Hidden dropout.
    pub dropout: Dropout,
}

impl DebertaEmbeddings {
    /// `[batch, seq, hidden]` from the batch (`DebertaV2Embeddings.forward` with `mask`).
    fn forward(&self, batch: &EncodedBatch, eps: f64, precision: Precision) -> Tensor<3> {
        let [_, seq] = batch.input_ids.dims();
        let mut x = self.word_embeddings.forward(batch.input_ids.clone());
        // `seq` ≤ max_position_embeddings: `TextTokenizer::for_model` refuses a longer
        // max_length and truncates to it (as for BERT).
        if let Some(pos) = &self.position_embeddings {
            x = x + pos.weight.val().narrow(0, 0, seq).unsqueeze_dim::<3>(0);
        }
        if let Some(types) = &self.token_type_embeddings {
            x = x + types.forward(batch.token_type_ids.clone());
        }
        if let Some(p) = &self.embed_proj {
            x = linear_2d(p, x, precision);
        }
        let x = fused::layer_norm(&self.layer_norm, x, eps);
        let x = x * batch.attention_mask.clone().unsqueeze_dim::<3>(2);
        fused::dropout(&self.dropout, x)
    }
}

/// `attention.self` (`DisentangledSelfAttention`) and `attention.output`.
#[derive(Module, Debug)]
pub struct DisentangledAttention {
    /// `attention.self.query_proj`.
    pub query_proj: Linear,
    /// `attention.self.key_proj`.
    pub key_proj: Linear,
    /// `attention.self.value_proj`.
    pub value_proj: Linear,
    /// `attention.self.pos_key_proj` (c2p without `share_att_key`).
    pub pos_key_proj: Option<Linear>,
    /// `attention.self.pos_query_proj` (p2c without `share_att_key`).
    pub pos_query_proj: Option<Linear>,
    /// `attention.output.dense`.
    pub output: Linear,
    /// `attention.output.LayerNorm`.
    pub layer_norm: LayerNorm,
    /// Dropout on the relative embeddings (`pos_dropout`, hidden dropout).
    pub pos_dropout: Dropout,
    /// Dropout on attention probabilities.
    pub attention_dropout: Dropout,
    /// Dropout on the projected output.
    pub dropout: Dropout,
    /// Number of heads.
    #[module(skip)]
    pub num_heads: usize,
}

/// What every layer of one forward pass shares.
struct Pass {
    /// Additive key mask `[batch, 1, 1, seq]`.
    mask_bias: Tensor<4>,
    /// Relative embeddings `[1, 2·span, hidden]` (after `encoder.LayerNorm`) and the index
    /// `δ(i, j)` `[seq, seq]`, with `relative_attention`.
    rel: Option<(Tensor<3>, Tensor<2, Int>)>,
    /// Content→position / position→content terms.
    c2p: bool,
    p2c: bool,
    /// `scale_factor` (1 + number of position terms).
    scale_factor: usize,
    share_att_key: bool,
    lora_dropout: f64,
    layer_norm_eps: f64,
    precision: Precision,
}

impl Pass {
    fn projection<'a>(&self, int8: Option<&'a QuantLinear>) -> Projection<'a> {
        Projection {
            lora_dropout: self.lora_dropout,
            int8,
            precision: self.precision,
        }
    }
}

impl DisentangledAttention {
    fn forward(&self, x: Tensor<3>, pass: &Pass, int8: Option<&[QuantLinear; 6]>) -> Tensor<3> {
        let q8 = |i: usize| int8.map(|l| &l[i]);
        let [b, s, _] = x.dims();
        let query = project(&self.query_proj, x.clone(), pass.projection(q8(0)));
        let key = project(&self.key_proj, x.clone(), pass.projection(q8(1)));
        let value = project(&self.value_proj, x.clone(), pass.projection(q8(2)));
        let width = query.dims()[2];
        let h = self.num_heads;
        let d = width / h;
        let split = |t: Tensor<3>| t.reshape([b, s, h, d]).swap_dims(1, 2);
        let (qh, kh, vh) = (split(query), split(key), split(value));
        // `scaled_size_sqrt`: sqrt(d · scale_factor) in f32.
        let scale = ((d as f32) * pass.scale_factor as f32).sqrt() as f64;
        let mut scores = qh
            .clone()
            .matmul(kh.clone().swap_dims(2, 3).div_scalar(scale));
        if let Some((rel, index)) = &pass.rel {
            let rel = fused::dropout(&self.pos_dropout, rel.clone());
            let span2 = rel.dims()[1];
            // [B, H, S, d] → [H, B·S, d]; positions [1, 2span, H·d] → [H, d, 2span].
            let by_head = |t: Tensor<4>| t.swap_dims(0, 1).reshape([h, b * s, d]);
            let pos_heads = |t: Tensor<3>| t.reshape([span2, h, d]).permute([1, 2, 0]);
            // Scores of every (token, relative position) pair `[B, H, S, 2span]`.
            let against = |content: Tensor<4>, pos: Tensor<3>| {
                by_head(content)
                    .matmul(pos_heads(pos))
                    .reshape([h, b, s, span2])
                    .swap_dims(0, 1)
            };
            let index = index.clone().unsqueeze::<4>().expand([b, h, s, s]);
            if pass.c2p {
                let pos_key = match (&self.pos_key_proj, pass.share_att_key) {
                    (Some(p), false) => linear_2d(p, rel.clone(), pass.precision),
                    _ => project(&self.key_proj, rel.clone(), pass.projection(q8(1))),
                };
                // c2p[i, j] = Q_i · PK[δ(i, j)]
                let c2p = against(qh, pos_key).gather(3, index.clone());
                scores = scores + c2p.div_scalar(scale);
            }
            if pass.p2c {
                let pos_query = match (&self.pos_query_proj, pass.share_att_key) {
                    (Some(p), false) => linear_2d(p, rel, pass.precision),
                    _ => project(&self.query_proj, rel, pass.projection(q8(0))),
                };
                // p2c[i, j] = K_j · PQ[δ(j, i)ᵀ]: gather row j at δ(i, j), then transpose
                // (δ is odd in i − j, so −r(j − i) = r(i − j), as transformers' `-r_pos`).
                let p2c = against(kh, pos_query)
                    .gather(3, index.swap_dims(2, 3))
                    .swap_dims(2, 3);
                scores = scores + p2c.div_scalar(scale);
            }
        }
        let probs = fused::softmax_last(scores + pass.mask_bias.clone());
        let probs = fused::dropout(&self.attention_dropout, probs);
        let context = probs.matmul(vh).swap_dims(1, 2).reshape([b, s, width]);
        let out = fused::dropout(
            &self.dropout,
            project(&self.output, context, pass.projection(q8(3))),
        );
        fused::layer_norm(&self.layer_norm, out + x, pass.layer_norm_eps)
    }
}

/// One `DebertaV2Layer`: attention block, then feed-forward block, each post-LayerNorm.
#[derive(Module, Debug)]
pub struct DebertaLayer {
    /// `attention.*`.
    pub attention: DisentangledAttention,
    /// `intermediate.dense`.
    pub intermediate: Linear,
    /// `output.dense`.
    pub output: Linear,
    /// `output.LayerNorm`.
    pub layer_norm: LayerNorm,
    /// Hidden dropout.
    pub dropout: Dropout,
    /// Feed-forward activation (`hidden_act`).
    #[module(skip)]
    pub activation: Activation,
}

impl DebertaLayer {
    fn forward(&self, x: Tensor<3>, pass: &Pass, int8: Option<&[QuantLinear; 6]>) -> Tensor<3> {
        let x = self.attention.forward(x, pass, int8);
        let q8 = |i: usize| int8.map(|l| &l[i]);
        let y = project(&self.intermediate, x.clone(), pass.projection(q8(4)));
        let y = match self.activation {
            Activation::Gelu => fused::gelu(y),
            Activation::GeluTanh => gelu_approximate(y),
            Activation::Relu => relu(y),
        };
        let out = fused::dropout(
            &self.dropout,
            project(&self.output, y, pass.projection(q8(5))),
        );
        fused::layer_norm(&self.layer_norm, out + x, pass.layer_norm_eps)
    }
}

/// `encoder.conv` (`ConvLayer`): a 1-D convolution over the embeddings, added to layer 0's
/// output: `LayerNorm(layer0 + act(dropout(mask · conv(emb)))) · mask`.
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// `encoder.conv.conv.weight`, stored `[kernel, in, out]` (HF: `[out, in, kernel]`).
    pub weight: Param<Tensor<3>>,
    /// `encoder.conv.conv.bias` `[out]`.
    pub bias: Param<Tensor<1>>,
    /// `encoder.conv.LayerNorm`.
    pub layer_norm: LayerNorm,
    /// Hidden dropout.
    pub dropout: Dropout,
    /// `conv_act`.
    #[module(skip)]
    pub act: HeadActivation,
}

impl ConvBlock {
    fn forward(&self, emb: Tensor<3>, residual: Tensor<3>, mask: Tensor<2>, eps: f64) -> Tensor<3> {
        let [b, s, d_in] = emb.dims();
        let w = self.weight.val();
        let [kernel, _, d_out] = w.dims();
        let pad = (kernel - 1) / 2;
        let padded = if pad > 0 {
            let zeros = Tensor::<3>::zeros([b, pad, d_in], &emb.device());
            Tensor::cat(vec![zeros.clone(), emb, zeros], 1)
        } else {
            emb
        };
        // Cross-correlation: out[t] = Σ_j x[t + j − pad] · W[j] + bias.
        let mut out = Tensor::<2>::zeros([b * s, d_out], &padded.device());
        for j in 0..kernel {
            let xj = padded.clone().narrow(1, j, s).reshape([b * s, d_in]);
            let wj = w.clone().narrow(0, j, 1).reshape([d_in, d_out]);
            out = out + xj.matmul(wj);
        }
        let out = out.reshape([b, s, d_out]) + self.bias.val().unsqueeze::<3>();
        let m = mask.unsqueeze_dim::<3>(2);
        let out = fused::dropout(&self.dropout, out * m.clone());
        let out = match self.act {
            HeadActivation::Gelu => fused::gelu(out),
            HeadActivation::Tanh => out.tanh(),
            HeadActivation::Relu => relu(out),
        };
        fused::layer_norm(&self.layer_norm, residual + out, eps) * m
    }
}

/// A DeBERTa-v2 encoder (`DebertaV2Model`).
#[derive(Module, Debug)]
pub struct DebertaV2 {
    /// Input embeddings.
    pub embeddings: DebertaEmbeddings,
    /// `encoder.layer.{i}`.
    pub layers: Vec<DebertaLayer>,
    /// `encoder.rel_embeddings` `[2·span, hidden]` (with `relative_attention`).
    pub rel_embeddings: Option<Embedding>,
    /// `encoder.LayerNorm` on the relative embeddings (`norm_rel_ebd` with `layer_norm`).
    pub rel_layer_norm: Option<LayerNorm>,
    /// `encoder.conv` (`conv_kernel_size` > 0).
    pub conv: Option<ConvBlock>,
    /// The config's DeBERTa options.
    #[module(skip)]
    pub options: DebertaOptions,
    /// `max_position_embeddings` of the config (the position table is optional).
    #[module(skip)]
    pub max_position_embeddings: usize,
    /// PEFT's `lora_dropout` ([`project`]); 0 without LoRA.
    #[module(skip)]
    pub lora_dropout: f64,
    /// `layer_norm_eps`.
    #[module(skip)]
    pub layer_norm_eps: f64,
    /// Number format of the linear-layer products.
    #[module(skip)]
    pub precision: Precision,
    /// Int8 weights of the six linear roles of every layer ([`super::quant`]).
    #[module(skip)]
    pub int8: Option<std::sync::Arc<super::quant::Int8Encoder>>,
}

/// `make_log_bucket_position` for one relative position: exact within `±bucket_size/2`,
/// logarithmic up to `max_position`, computed in f32 as PyTorch does.
pub fn make_log_bucket_position(relative: i64, bucket_size: usize, max_position: usize) -> i64 {
    let mid = (bucket_size / 2) as i64;
    let abs_pos = if relative < mid && relative > -mid {
        mid - 1
    } else {
        relative.abs()
    };
    if abs_pos <= mid {
        return relative;
    }
    let ratio = (abs_pos as f32 / mid as f32).ln()
        / ((((max_position as f64) - 1.0) / mid as f64) as f32).ln();
    let log_pos = (ratio * (mid - 1) as f32).ceil() + mid as f32;
    (log_pos * relative.signum() as f32) as i64
}

/// `δ(i, j)` for a sequence of `seq` tokens, row-major `[seq, seq]`: the column of the
/// relative-position scores that query `i` reads for key `j`,
/// `clamp(r(i − j) + span, 0, 2·span − 1)` (`build_relative_position` + the clamp of
/// `disentangled_attention_bias`).
pub fn relative_index(seq: usize, options: &DebertaOptions) -> Vec<i64> {
    let span = options.att_span() as i64;
    let mut out = Vec::with_capacity(seq * seq);
    for i in 0..seq as i64 {
        for j in 0..seq as i64 {
            let r = match options.position_buckets {
                Some(bk) => make_log_bucket_position(i - j, bk, options.max_relative_positions),
                None => i - j,
            };
            out.push((r + span).clamp(0, 2 * span - 1));
        }
    }
    out
}

impl DebertaV2 {
    /// The family's table of names.
    pub fn names(&self) -> &'static Names {
        &names::NAMES
    }

    /// Last hidden states `[batch, seq, hidden]` (`DebertaV2Model.forward`).
    pub fn forward(&self, batch: &EncodedBatch) -> Tensor<3> {
        let eps = self.layer_norm_eps;
        let emb = self.embeddings.forward(batch, eps, self.precision);
        let seq = emb.dims()[1];
        let rel = self.rel_embeddings.as_ref().map(|table| {
            let mut r = table.weight.val();
            if let Some(ln) = &self.rel_layer_norm {
                r = fused::layer_norm(ln, r, eps);
            }
            let index = Tensor::<2, Int>::from_data(
                TensorData::new(relative_index(seq, &self.options), [seq, seq]),
                &r.device(),
            );
            (r.unsqueeze_dim::<3>(0), index)
        });
        let pass = Pass {
            mask_bias: attention_bias(batch.attention_mask.clone()),
            rel,
            c2p: self.options.c2p,
            p2c: self.options.p2c,
            scale_factor: self.options.scale_factor(),
            share_att_key: self.options.share_att_key,
            lora_dropout: self.lora_dropout,
            layer_norm_eps: eps,
            precision: self.precision,
        };
        let mut x = emb.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let int8 = self.int8.as_ref().and_then(|q| q.layers.get(i));
            x = layer.forward(x, &pass, int8);
            if i == 0
                && let Some(conv) = &self.conv
            {
                x = conv.forward(emb.clone(), x, batch.attention_mask.clone(), eps);
            }
        }
        x
    }
}

impl Backbone for DebertaV2 {
    fn model_type(&self) -> &'static str {
        names::NAMES.model_type
    }

    fn hidden_states(&self, batch: &EncodedBatch) -> Tensor<3> {
        self.forward(batch)
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn dims(&self) -> BackboneDims {
        let [vocab_size, _] = self.embeddings.word_embeddings.weight.dims();
        let hidden_size = self.embeddings.layer_norm.gamma.dims()[0];
        BackboneDims {
            hidden_size,
            num_hidden_layers: self.layers.len(),
            intermediate_size: self
                .layers
                .first()
                .map_or(0, |l| l.intermediate.weight.dims()[1]),
            max_position_embeddings: self.max_position_embeddings,
            vocab_size,
        }
    }

    fn num_heads(&self, layer: usize) -> usize {
        self.layers[layer].attention.num_heads
    }

    fn set_num_heads(&mut self, layer: usize, heads: usize) {
        self.layers[layer].attention.num_heads = heads;
    }

    fn linear(&self, layer: usize, role: LinearRole) -> &Linear {
        let l = &self.layers[layer];
        match role {
            LinearRole::Query => &l.attention.query_proj,
            LinearRole::Key => &l.attention.key_proj,
            LinearRole::Value => &l.attention.value_proj,
            LinearRole::AttentionOutput => &l.attention.output,
            LinearRole::Intermediate => &l.intermediate,
            LinearRole::Output => &l.output,
        }
    }

    fn linear_mut(&mut self, layer: usize, role: LinearRole) -> &mut Linear {
        let l = &mut self.layers[layer];
        match role {
            LinearRole::Query => &mut l.attention.query_proj,
            LinearRole::Key => &mut l.attention.key_proj,
            LinearRole::Value => &mut l.attention.value_proj,
            LinearRole::AttentionOutput => &mut l.attention.output,
            LinearRole::Intermediate => &mut l.intermediate,
            LinearRole::Output => &mut l.output,
        }
    }

    fn linear_name(&self, layer: usize, role: LinearRole) -> String {
        names::NAMES.linear(layer, role)
    }

    fn prefix(&self) -> &'static str {
        names::PREFIX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets as transformers' `make_log_bucket_position(bucket_size=16, max_position=64)`
    /// prints them for these relative positions (exact below 8, logarithmic beyond).
    #[test]
    fn deberta_log_buckets_match_transformers() {
        let cases = [
            (0, 0),
            (1, 1),
            (-1, -1),
            (7, 7),
            (-7, -7),
            (8, 8),
            (9, 9),
            (12, 10),
            (20, 12),
            (40, 14),
            (63, 15),
            (-63, -15),
            (200, 19),
        ];
        for (rel, want) in cases {
            assert_eq!(
                make_log_bucket_position(rel, 16, 64),
                want,
                "relative {rel}"
            );
        }
    }
}
