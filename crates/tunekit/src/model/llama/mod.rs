//! Llama-style decoders (`LlamaForCausalLM`; also Mistral/SmolLM, and Qwen2 with q/k/v biases
//! and Qwen3 with q/k RMSNorm through [`LlamaConfig`]'s flags): token embeddings, pre-norm
//! blocks of grouped-query attention with rotary positions and a SwiGLU MLP, a final RMSNorm
//! and the LM head (tied to the embeddings when the checkpoint has none).
//!
//! The forward pass follows transformers' `modeling_llama.py` in f32: `RMSNorm(x) = w · x /
//! sqrt(mean(x²) + ε)`; rotary `x·cos + rotate_half(x)·sin` with `inv_freq[j] = 1/θ^(2j/d)`;
//! attention `softmax(q·kᵀ/√d + causal) · v` where query head `h` reads key/value head
//! `h / (heads / kv_heads)`; MLP `down(silu(gate(x)) · up(x))`.
//!
//! Loading (HF safetensors directory or GGUF file) is in [`load`]; generation (KV cache,
//! sampling) in [`crate::llm`].

pub mod load;
pub mod lora;

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

pub use load::{load_gguf, load_hf_dir};

/// Hyperparameters of a llama-style decoder (transformers' `LlamaConfig` names).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// `model_type` (`llama`, `mistral`, `qwen2`, `qwen3`).
    pub model_type: String,
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `intermediate_size` (the MLP's width).
    pub intermediate_size: usize,
    /// `num_hidden_layers`.
    pub num_hidden_layers: usize,
    /// `num_attention_heads` (query heads).
    pub num_attention_heads: usize,
    /// `num_key_value_heads` (grouped-query attention; = heads for multi-head attention).
    pub num_key_value_heads: usize,
    /// `head_dim` (`hidden_size / num_attention_heads` unless given).
    pub head_dim: usize,
    /// `rms_norm_eps`.
    pub rms_norm_eps: f64,
    /// `rope_theta` (θ of the rotary frequencies).
    pub rope_theta: f64,
    /// `max_position_embeddings` (context length).
    pub max_position_embeddings: usize,
    /// `tie_word_embeddings`: the LM head is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// `attention_bias`: q/k/v projections have biases (Qwen2).
    pub attention_bias: bool,
    /// q/k RMSNorm per head before rotary (Qwen3's `q_norm`, `k_norm`).
    pub qk_norm: bool,
}

impl LlamaConfig {
    /// transformers' `config.json` for this config (`…ForCausalLM`, f32 weights), with the
    /// bos / eos token ids.
    pub fn to_hf_json(&self, bos: Option<u32>, eos: Option<u32>) -> serde_json::Value {
        let class = match self.model_type.as_str() {
            "mistral" => "MistralForCausalLM",
            "qwen2" => "Qwen2ForCausalLM",
            "qwen3" => "Qwen3ForCausalLM",
            _ => "LlamaForCausalLM",
        };
        serde_json::json!({
            "architectures": [class],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "mlp_bias": false,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "torch_dtype": "float32",
        })
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads.max(1)
    }
}

/// One decoder block (`model.layers.{i}`).
#[derive(Module, Debug)]
pub struct LlamaLayer {
    /// `input_layernorm.weight` `[hidden]`.
    pub input_layernorm: Param<Tensor<1>>,
    /// `self_attn.q_proj`: hidden → heads·head_dim.
    pub q_proj: Linear,
    /// `self_attn.k_proj`: hidden → kv_heads·head_dim.
    pub k_proj: Linear,
    /// `self_attn.v_proj`: hidden → kv_heads·head_dim.
    pub v_proj: Linear,
    /// `self_attn.o_proj`: heads·head_dim → hidden.
    pub o_proj: Linear,
    /// `self_attn.q_norm.weight` `[head_dim]` (Qwen3).
    pub q_norm: Option<Param<Tensor<1>>>,
    /// `self_attn.k_norm.weight` `[head_dim]` (Qwen3).
    pub k_norm: Option<Param<Tensor<1>>>,
    /// `post_attention_layernorm.weight` `[hidden]`.
    pub post_attention_layernorm: Param<Tensor<1>>,
    /// `mlp.gate_proj`: hidden → intermediate.
    pub gate_proj: Linear,
    /// `mlp.up_proj`: hidden → intermediate.
    pub up_proj: Linear,
    /// `mlp.down_proj`: intermediate → hidden.
    pub down_proj: Linear,
}

/// A llama-style causal language model (`LlamaForCausalLM`).
#[derive(Module, Debug)]
pub struct Llama {
    /// `model.embed_tokens` `[vocab, hidden]`.
    pub embed_tokens: Embedding,
    /// `model.layers.{i}`.
    pub layers: Vec<LlamaLayer>,
    /// `model.norm.weight` `[hidden]`.
    pub norm: Param<Tensor<1>>,
    /// `lm_head` (hidden → vocab); `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear>,
    /// Hyperparameters.
    #[module(skip)]
    pub config: LlamaConfig,
}

/// Keys and values of the positions seen so far, per layer: `[batch, kv_heads, len, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `x·W + b` of a linear layer on `x` `[…, in]`; with a LoRA adapter, PEFT's
/// `x·W + b + scale·(x·A)·B` — the frozen base and the adapter kept apart, so training never
/// forms the merged `W + scale·A·B` nor the gradient of a `[in, out]` matrix (what
/// `Linear::forward` on a reparameterised weight would do: a full weight-gradient product per
/// adapted layer, as expensive as full fine-tuning).
pub fn project<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    let Some(adapter) = linear.weight.adapter() else {
        return linear.forward(x);
    };
    let y = x.clone().matmul(linear.weight.base().unsqueeze::<D>());
    let y = match &linear.bias {
        Some(b) => y + b.val().unsqueeze::<D>(),
        None => y,
    };
    let a = adapter.a.val().unsqueeze::<D>();
    let b = adapter.b.val().unsqueeze::<D>();
    y + x.matmul(a).matmul(b).mul_scalar(adapter.scale)
}

/// `w · x / sqrt(mean(x²) + ε)` over the last dimension (transformers' `LlamaRMSNorm`).
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: &Param<Tensor<1>>, eps: f64) -> Tensor<D> {
    let var = x.clone().powi_scalar(2).mean_dim(D - 1);
    let inv = var.add_scalar(eps).sqrt().recip();
    let w = weight.val();
    let n = w.dims()[0];
    let mut shape = [1usize; D];
    shape[D - 1] = n;
    (x * inv) * w.reshape(shape)
}

/// Rotary tables `cos`, `sin` `[1, 1, seq, head_dim]` for positions `start..start+seq`
/// (transformers' default rope: f32 angles, both halves equal).
fn rotary(theta: f64, start: usize, seq: usize, d: usize, device: &Device) -> [Tensor<4>; 2] {
    let half = (d / 2).max(1);
    let inv: Vec<f32> = (0..half)
        .map(|j| 1.0f32 / (theta as f32).powf((2 * j) as f32 / d as f32))
        .collect();
    let mut cos = Vec::with_capacity(seq * d);
    let mut sin = Vec::with_capacity(seq * d);
    for p in start..start + seq {
        for k in 0..d {
            let angle = p as f32 * inv[k % half];
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let t = |v| Tensor::<4>::from_data(TensorData::new(v, [1, 1, seq, d]), device);
    [t(cos), t(sin)]
}

/// `x·cos + rotate_half(x)·sin` on `x` `[batch, heads, seq, head_dim]`.
fn apply_rotary(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.clone().narrow(3, d / 2, d - d / 2);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// Causal bias `[1, 1, group·seq, past+seq]` for queries grouped `group` per key head: row
/// `r` is query position `past + r % seq`; 0 where the key is not after it, −∞ elsewhere.
fn causal_bias(group: usize, seq: usize, past: usize, device: &Device) -> Tensor<4> {
    let total = past + seq;
    let mut v = Vec::with_capacity(group * seq * total);
    for _ in 0..group {
        for q in 0..seq {
            v.extend((0..total).map(|k| {
                if k <= past + q {
                    0.0f32
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
    }
    Tensor::from_data(TensorData::new(v, [1, 1, group * seq, total]), device)
}

impl Llama {
    /// Logits `[batch, seq, vocab]` for `input_ids` `[batch, seq]` following the `cache`'s
    /// positions (which it extends); only the last position's when `last_only` (`seq` = 1).
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        cache: &mut KvCache,
        last_only: bool,
    ) -> Tensor<3> {
        let x = self.hidden_states(input_ids, cache);
        let [b, s, hid] = x.dims();
        let (x, s) = if last_only && s > 1 {
            (x.narrow(1, s - 1, 1), 1)
        } else {
            (x, s)
        };
        self.lm_logits(x.reshape([b * s, hid]))
            .reshape([b, s, self.config.vocab_size])
    }

    /// Logits `[n, vocab]` of final hidden states `[n, hidden]` (the LM head, or the
    /// embedding matrix when tied).
    pub fn lm_logits(&self, x: Tensor<2>) -> Tensor<2> {
        match &self.lm_head {
            Some(head) => project(head, x),
            None => x.matmul(self.embed_tokens.weight.val().transpose()),
        }
    }

    /// Final hidden states `[batch, seq, hidden]` (after the last RMSNorm) of `input_ids`
    /// `[batch, seq]` following the `cache`'s positions, which it extends. Causal attention
    /// only: a right-padded batch gives its real tokens the same states as alone.
    pub fn hidden_states(&self, input_ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        let c = &self.config;
        let device = input_ids.device();
        let [b, s] = input_ids.dims();
        let past = cache.len;
        let (h, kvh, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let group = c.group_size();
        let [cos, sin] = rotary(c.rope_theta, past, s, d, &device);
        let bias = (s > 1).then(|| causal_bias(group, s, past, &device));
        let scale = 1.0 / (d as f64).sqrt();
        if cache.layers.len() != self.layers.len() {
            cache.layers = vec![None; self.layers.len()];
        }
        let mut x = self.embed_tokens.forward(input_ids);
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let hn = rms_norm(x.clone(), &layer.input_layernorm, c.rms_norm_eps);
            let heads = |t: Tensor<3>, n: usize| t.reshape([b, s, n, d]).swap_dims(1, 2);
            let mut q = heads(project(&layer.q_proj, hn.clone()), h);
            let mut k = heads(project(&layer.k_proj, hn.clone()), kvh);
            let v = heads(project(&layer.v_proj, hn), kvh);
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                q = rms_norm(q, qn, c.rms_norm_eps);
                k = rms_norm(k, kn, c.rms_norm_eps);
            }
            let q = apply_rotary(q, &cos, &sin);
            let k = apply_rotary(k, &cos, &sin);
            let (k, v) = match slot.take() {
                Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
                None => (k, v),
            };
            *slot = Some((k.clone(), v.clone()));
            // Queries grouped by their key/value head: [b, kvh, group·s, d].
            let qg = q.reshape([b, kvh, group * s, d]);
            let mut scores = qg.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
            if let Some(bias) = &bias {
                scores = scores + bias.clone();
            }
            let ctx = softmax(scores, 3).matmul(v);
            let ctx = ctx
                .reshape([b, h, s, d])
                .swap_dims(1, 2)
                .reshape([b, s, h * d]);
            x = x + project(&layer.o_proj, ctx);
            let hn = rms_norm(x.clone(), &layer.post_attention_layernorm, c.rms_norm_eps);
            let act = silu(project(&layer.gate_proj, hn.clone())) * project(&layer.up_proj, hn);
            x = x + project(&layer.down_proj, act);
        }
        cache.len = past + s;
        rms_norm(x, &self.norm, c.rms_norm_eps)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Weights from a formula: `0.05 · sin(0.37 · i + seed(name))`, norms around 1.
    struct Formula;

    impl load::TensorSource for Formula {
        fn has(&self, name: &str) -> bool {
            name != "lm_head.weight"
        }
        fn read(&mut self, name: &str, shape: &[usize]) -> crate::error::Result<Vec<f32>> {
            let seed = name
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
            let n: usize = shape.iter().product();
            let norm = name.contains("norm");
            Ok((0..n)
                .map(|i| {
                    let x = (0.37 * i as f32 + (seed % 1000) as f32 * 0.01).sin();
                    if norm { 1.0 + 0.1 * x } else { 0.05 * x }
                })
                .collect())
        }
    }

    /// A tiny llama (2 layers, hidden 16, 4 query and 2 key/value heads, vocab 32, tied
    /// embeddings) with weights from a formula.
    pub(crate) fn formula_model(device: &Device) -> Llama {
        let config = LlamaConfig {
            model_type: "llama".into(),
            vocab_size: 32,
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 4,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: 64,
            tie_word_embeddings: true,
            attention_bias: false,
            qk_norm: false,
        };
        load::build(config, &mut Formula, device).unwrap()
    }

    #[test]
    fn lora_projection_kept_apart_equals_the_merged_weight() {
        let device = Device::flex();
        let model = formula_model(&device);
        let modules = vec!["q_proj".to_string(), "down_proj".to_string()];
        device.seed(3);
        let model = lora::apply(model, 4, 8.0, &modules).unwrap();
        // B is zero at first: give every B values so the adapter matters.
        let mut values = std::collections::HashMap::new();
        for (_, _, l) in lora::named_linears(&model) {
            if let Some(a) = l.weight.adapter() {
                let [r, out] = a.b.val().dims();
                let v = (0..r * out)
                    .map(|i| 0.01 * (i as f32 * 0.7).cos())
                    .collect();
                values.insert(a.b.id, (vec![r, out], v));
            }
        }
        let model = crate::model::lora::load_values(model, values, &device).unwrap();
        let input = |width: usize| {
            let v = (0..2 * 3 * width).map(|i| (i as f32 * 0.3).sin()).collect();
            Tensor::<3>::from_data(TensorData::new(v, [2, 3, width]), &device)
        };
        // q_proj is square, down_proj maps the MLP's 24 back to 16: both adapted.
        for (l, width) in [
            (&model.layers[1].q_proj, 16),
            (&model.layers[0].down_proj, 24),
        ] {
            assert!(l.weight.adapter().is_some());
            let x = input(width);
            let ours = crate::model::weights::to_vec(project(l, x.clone())).unwrap();
            let merged = crate::model::weights::to_vec(l.forward(x)).unwrap();
            let diff = ours
                .iter()
                .zip(&merged)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-5, "{diff}");
            let base = crate::model::weights::to_vec(
                input(width).matmul(l.weight.base().unsqueeze::<3>()),
            )
            .unwrap();
            assert!(ours.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-4));
        }
        assert!(model.layers[1].q_proj.weight.adapter().is_some());
    }

    #[test]
    fn hf_config_json_reads_back_as_the_same_config() {
        let dir = tempfile::tempdir().unwrap();
        let model = formula_model(&Device::flex());
        let p = dir.path().join("config.json");
        std::fs::write(&p, model.config.to_hf_json(Some(1), Some(2)).to_string()).unwrap();
        assert_eq!(load::config_from_hf(&p).unwrap(), model.config);
    }
}
