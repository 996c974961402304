//! ModernBERT's modules, forward pass, weights in and out (see the module docs of
//! [`super`]).

use burn::module::Module;
use burn::nn::{Dropout, Embedding, LayerNorm, Linear};
use burn::tensor::activation::{gelu_approximate, relu};
use burn::tensor::{Tensor, TensorData};

use super::super::backbone::{Backbone, BackboneDims, Feature, LinearRole};
use super::super::bert::{
    Activation, EncodedBatch, Projection, activation_for, attention_bias, dropout, project,
};
use super::super::bf16::Precision;
use super::super::config::BertConfig;
use super::super::family::Names;
use super::super::fused;
use super::super::weights::{
    DropoutOverride, HfTensor, WeightFile, emb_to_hf, linear_to_hf, ln_to_hf,
};
use super::{AttentionKind, ModernBertOptions, NAMES};
use crate::error::Result;

/// One ModernBERT layer (`layers.{i}`).
#[derive(Module, Debug)]
pub struct ModernBertLayer {
    /// `attn_norm` (none in layer 0, where it is the identity).
    pub attn_norm: Option<LayerNorm>,
    /// `attn.Wqkv`: hidden → 3·hidden (query, key, value).
    pub wqkv: Linear,
    /// `attn.Wo`: hidden → hidden.
    pub wo: Linear,
    /// `mlp_norm`.
    pub mlp_norm: LayerNorm,
    /// `mlp.Wi`: hidden → 2·intermediate (input, gate).
    pub wi: Linear,
    /// `mlp.Wo`: intermediate → hidden.
    pub mlp_wo: Linear,
    /// Dropout on the attention probabilities (`attention_dropout`).
    pub attention_dropout: Dropout,
    /// Dropout after `attn.Wo` (`attention_dropout`, as `out_drop`).
    pub out_drop: Dropout,
    /// Dropout inside the MLP (`mlp_dropout`).
    pub mlp_drop: Dropout,
    /// Attention heads.
    #[module(skip)]
    pub num_heads: usize,
    /// Global or sliding-window attention.
    #[module(skip)]
    pub local: bool,
}

/// The ModernBERT encoder (`ModernBertModel`): embeddings, layers, `final_norm`.
#[derive(Module, Debug)]
pub struct ModernBert {
    /// `embeddings.tok_embeddings`.
    pub tok_embeddings: Embedding,
    /// `embeddings.norm`.
    pub embeddings_norm: LayerNorm,
    /// `embeddings.drop` (`embedding_dropout`).
    pub embeddings_dropout: Dropout,
    /// `layers.{i}`.
    pub layers: Vec<ModernBertLayer>,
    /// `final_norm`.
    pub final_norm: LayerNorm,
    /// Rotary θ of global layers.
    #[module(skip)]
    pub global_rope_theta: f64,
    /// Rotary θ of local layers.
    #[module(skip)]
    pub local_rope_theta: f64,
    /// Half window of local layers (`local_attention / 2`): a query sees keys at most this
    /// many positions away.
    #[module(skip)]
    pub half_window: usize,
    /// `max_position_embeddings` (the longest input; rotary embeddings have no table).
    #[module(skip)]
    pub max_position_embeddings: usize,
    /// `norm_eps`.
    #[module(skip)]
    pub norm_eps: f64,
    /// Activation of the GeGLU (`hidden_activation`).
    #[module(skip)]
    pub activation: Activation,
    /// PEFT's `lora_dropout` (see [`project`]); 0 without LoRA.
    #[module(skip)]
    pub lora_dropout: f64,
    /// Number format of the linear-layer products.
    #[module(skip)]
    pub precision: Precision,
}

/// Rotary tables `cos`, `sin` (row-major `[seq, head_dim]`) for θ, as transformers computes
/// them in f32: `inv_freq[j] = 1 / θ^(2j / d)`, angle `pos · inv_freq`, duplicated over both
/// halves. The forward pass and the ONNX export both read them from here.
pub fn rotary_table(theta: f64, seq: usize, head_dim: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|j| 1.0f32 / (theta as f32).powf((2 * j) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(seq * head_dim);
    let mut sin = Vec::with_capacity(seq * head_dim);
    for p in 0..seq {
        for k in 0..head_dim {
            let angle = f64::from(p as f32 * inv[k % half.max(1)]);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// [`rotary_table`] as tensors `[1, seq, 1, head_dim]`.
fn rotary(
    theta: f64,
    seq: usize,
    head_dim: usize,
    device: &burn::tensor::Device,
) -> [Tensor<4>; 2] {
    let (cos, sin) = rotary_table(theta, seq, head_dim);
    let t = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, seq, 1, head_dim]), device);
    [t(cos), t(sin)]
}

/// `x · cos + rotate_half(x) · sin` per head of `x` `[batch, seq, heads·head_dim]`, with
/// `rotate_half(x) = [−x₂, x₁]` over the halves of each head.
fn apply_rotary(x: Tensor<3>, heads: usize, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<3> {
    let [b, s, w] = x.dims();
    let d = w / heads.max(1);
    let x = x.reshape([b, s, heads, d]);
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.clone().narrow(3, d / 2, d - d / 2);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    (x * cos.clone() + rotated * sin.clone()).reshape([b, s, w])
}

/// The additive window bias `[1, 1, seq, seq]`: 0 where `|q − k| ≤ half_window`, −1e9
/// elsewhere (transformers' `sliding_window_bidirectional_overlay`).
fn window_bias(seq: usize, half_window: usize, device: &burn::tensor::Device) -> Tensor<4> {
    let mut v = Vec::with_capacity(seq * seq);
    for q in 0..seq {
        for k in 0..seq {
            v.push(if q.abs_diff(k) <= half_window {
                0.0f32
            } else {
                -1e9
            });
        }
    }
    Tensor::from_data(TensorData::new(v, [1, 1, seq, seq]), device)
}

impl ModernBert {
    fn act(&self, x: Tensor<3>) -> Tensor<3> {
        match self.activation {
            Activation::Gelu => fused::gelu(x),
            Activation::GeluTanh => gelu_approximate(x),
            Activation::Relu => relu(x),
        }
    }

    fn projection(&self) -> Projection<'static> {
        Projection {
            lora_dropout: self.lora_dropout,
            int8: None,
            precision: self.precision,
        }
    }

    /// Last hidden states `[batch, seq, hidden]` (after `final_norm`).
    pub fn forward(&self, batch: &EncodedBatch) -> Tensor<3> {
        let device = batch.input_ids.device();
        let [_, seq] = batch.input_ids.dims();
        let eps = self.norm_eps;
        let x = self.tok_embeddings.forward(batch.input_ids.clone());
        let x = fused::layer_norm(&self.embeddings_norm, x, eps);
        let mut x = fused::dropout(&self.embeddings_dropout, x);
        let hidden = x.dims()[2];
        let heads = self.layers.first().map_or(1, |l| l.num_heads.max(1));
        let head_dim = hidden / heads;
        let global_bias = attention_bias(batch.attention_mask.clone());
        let needs_local = self.layers.iter().any(|l| l.local);
        let local_bias =
            needs_local.then(|| global_bias.clone() + window_bias(seq, self.half_window, &device));
        let global_rope = rotary(self.global_rope_theta, seq, head_dim, &device);
        let local_rope = needs_local.then(|| rotary(self.local_rope_theta, seq, head_dim, &device));
        for layer in &self.layers {
            let (bias, [cos, sin]) = match (layer.local, &local_bias, &local_rope) {
                (true, Some(b), Some(r)) => (b, r),
                _ => (&global_bias, &global_rope),
            };
            // Attention block (pre-norm).
            let h = match &layer.attn_norm {
                Some(n) => fused::layer_norm(n, x.clone(), eps),
                None => x.clone(),
            };
            let qkv = project(&layer.wqkv, h, self.projection());
            let width = qkv.dims()[2] / 3;
            let q = apply_rotary(qkv.clone().narrow(2, 0, width), layer.num_heads, cos, sin);
            let k = apply_rotary(
                qkv.clone().narrow(2, width, width),
                layer.num_heads,
                cos,
                sin,
            );
            let v = qkv.narrow(2, 2 * width, width);
            let context = super::super::attention::attention(
                q,
                k,
                v,
                bias.clone(),
                layer.num_heads,
                &layer.attention_dropout,
            );
            let out = fused::dropout(
                &layer.out_drop,
                project(&layer.wo, context, self.projection()),
            );
            x = x + out;
            // GeGLU block (pre-norm).
            let h = fused::layer_norm(&layer.mlp_norm, x.clone(), eps);
            let wi = project(&layer.wi, h, self.projection());
            let inter = wi.dims()[2] / 2;
            let input = wi.clone().narrow(2, 0, inter);
            let gate = wi.narrow(2, inter, inter);
            let h = fused::dropout(&layer.mlp_drop, self.act(input) * gate);
            x = x + project(&layer.mlp_wo, h, self.projection());
        }
        fused::layer_norm(&self.final_norm, x, eps)
    }

    /// The table of names.
    pub fn names(&self) -> &'static Names {
        &NAMES
    }
}

impl Backbone for ModernBert {
    fn model_type(&self) -> &'static str {
        NAMES.model_type
    }

    fn hidden_states(&self, batch: &EncodedBatch) -> Tensor<3> {
        self.forward(batch)
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn dims(&self) -> BackboneDims {
        let [vocab_size, hidden_size] = self.tok_embeddings.weight.dims();
        BackboneDims {
            hidden_size,
            num_hidden_layers: self.layers.len(),
            intermediate_size: self.layers.first().map_or(0, |l| l.mlp_wo.weight.dims()[0]),
            max_position_embeddings: self.max_position_embeddings,
            vocab_size,
        }
    }

    fn num_heads(&self, layer: usize) -> usize {
        self.layers[layer].num_heads
    }

    fn set_num_heads(&mut self, layer: usize, heads: usize) {
        self.layers[layer].num_heads = heads;
    }

    fn linear(&self, layer: usize, role: LinearRole) -> &Linear {
        let l = &self.layers[layer];
        match role {
            LinearRole::Query | LinearRole::Key | LinearRole::Value => &l.wqkv,
            LinearRole::AttentionOutput => &l.wo,
            LinearRole::Intermediate => &l.wi,
            LinearRole::Output => &l.mlp_wo,
        }
    }

    fn linear_mut(&mut self, layer: usize, role: LinearRole) -> &mut Linear {
        let l = &mut self.layers[layer];
        match role {
            LinearRole::Query | LinearRole::Key | LinearRole::Value => &mut l.wqkv,
            LinearRole::AttentionOutput => &mut l.wo,
            LinearRole::Intermediate => &mut l.wi,
            LinearRole::Output => &mut l.mlp_wo,
        }
    }

    fn linear_name(&self, layer: usize, role: LinearRole) -> String {
        NAMES.linear(layer, role)
    }

    fn prefix(&self) -> &'static str {
        NAMES.prefix
    }

    fn unsupported(&self, feature: Feature) -> Option<String> {
        Some(super::unsupported(feature))
    }
}

/// Load ModernBERT's encoder from `file` (tensors with or without the `model.` prefix: a
/// task model, `ModernBertForMaskedLM` or a bare `ModernBertModel`).
pub fn load(
    file: &mut WeightFile,
    config: &BertConfig,
    drop: DropoutOverride,
    device: &burn::tensor::Device,
) -> Result<ModernBert> {
    let o = ModernBertOptions::of(config)?;
    let heads = config.num_attention_heads.max(1);
    if config.hidden_size / heads < 2 {
        return Err(crate::error::Error::Config(format!(
            "modernbert: hidden_size {} / num_attention_heads {} leaves under 2 dimensions per \
             head, which rotary embeddings need",
            config.hidden_size, config.num_attention_heads
        )));
    }
    let (h, inter, eps) = (
        config.hidden_size,
        config.intermediate_size,
        config.layer_norm_eps,
    );
    let hidden_p = drop.hidden;
    let attn_p = drop
        .attention
        .unwrap_or(config.attention_probs_dropout_prob);
    let prefix = file.encoder_name("");
    let n = |s: &str| format!("{prefix}{s}");
    let tok_embeddings = file.embedding(&n(NAMES.word_embeddings), config.vocab_size, h, device)?;
    let embeddings_norm =
        file.layer_norm_with(&n(NAMES.embeddings_layer_norm), h, eps, o.norm_bias, device)?;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = n(&NAMES.layer_prefix(i));
        let attn_norm = if i == 0 {
            None
        } else {
            Some(file.layer_norm_with(&format!("{l}.attn_norm"), h, eps, o.norm_bias, device)?)
        };
        layers.push(ModernBertLayer {
            attn_norm,
            wqkv: file.linear_with(
                &format!("{l}.attn.Wqkv"),
                h,
                3 * h,
                o.attention_bias,
                device,
            )?,
            wo: file.linear_with(&format!("{l}.attn.Wo"), h, h, o.attention_bias, device)?,
            mlp_norm: file.layer_norm_with(
                &format!("{l}.mlp_norm"),
                h,
                eps,
                o.norm_bias,
                device,
            )?,
            wi: file.linear_with(&format!("{l}.mlp.Wi"), h, 2 * inter, o.mlp_bias, device)?,
            mlp_wo: file.linear_with(&format!("{l}.mlp.Wo"), inter, h, o.mlp_bias, device)?,
            attention_dropout: dropout(attn_p),
            out_drop: dropout(attn_p),
            mlp_drop: dropout(hidden_p.unwrap_or(o.mlp_dropout)),
            num_heads: config.num_attention_heads,
            local: o.layer_types.get(i) == Some(&AttentionKind::Local),
        });
    }
    let final_norm = file.layer_norm_with(&n("final_norm"), h, eps, o.norm_bias, device)?;
    Ok(ModernBert {
        tok_embeddings,
        embeddings_norm,
        embeddings_dropout: dropout(hidden_p.unwrap_or(o.embedding_dropout)),
        layers,
        final_norm,
        global_rope_theta: o.global_rope_theta,
        local_rope_theta: o.local_rope_theta,
        half_window: o.local_attention / 2,
        max_position_embeddings: config.max_position_embeddings,
        norm_eps: eps,
        activation: activation_for(config),
        lora_dropout: 0.0,
        precision: Precision::F32,
    })
}

/// The encoder's tensors with HF names (`model.` prefix) and layouts.
pub fn tensors(out: &mut Vec<HfTensor>, m: &ModernBert) -> Result<()> {
    let p = NAMES.prefix;
    emb_to_hf(
        out,
        &format!("{p}{}", NAMES.word_embeddings),
        &m.tok_embeddings,
    )?;
    ln_to_hf(
        out,
        &format!("{p}{}", NAMES.embeddings_layer_norm),
        &m.embeddings_norm,
    )?;
    for (i, layer) in m.layers.iter().enumerate() {
        let l = format!("{p}{}", NAMES.layer_prefix(i));
        if let Some(norm) = &layer.attn_norm {
            ln_to_hf(out, &format!("{l}.attn_norm"), norm)?;
        }
        linear_to_hf(out, &format!("{l}.attn.Wqkv"), &layer.wqkv)?;
        linear_to_hf(out, &format!("{l}.attn.Wo"), &layer.wo)?;
        ln_to_hf(out, &format!("{l}.mlp_norm"), &layer.mlp_norm)?;
        linear_to_hf(out, &format!("{l}.mlp.Wi"), &layer.wi)?;
        linear_to_hf(out, &format!("{l}.mlp.Wo"), &layer.mlp_wo)?;
    }
    ln_to_hf(out, &format!("{p}final_norm"), &m.final_norm)
}

/// Names (without the prefix) and HF shapes of the encoder's tensors for `config`.
pub fn encoder_shapes(config: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (config.hidden_size, config.intermediate_size);
    // The config was validated when read; fall back to transformers' defaults otherwise.
    let (norm_bias, attention_bias, mlp_bias) = ModernBertOptions::from_config(config)
        .map_or((false, false, false), |o| {
            (o.norm_bias, o.attention_bias, o.mlp_bias)
        });
    let mut out = vec![(
        format!("{}.weight", NAMES.word_embeddings),
        vec![config.vocab_size, h],
    )];
    let norm = |out: &mut Vec<(String, Vec<usize>)>, name: String| {
        out.push((format!("{name}.weight"), vec![h]));
        if norm_bias {
            out.push((format!("{name}.bias"), vec![h]));
        }
    };
    norm(&mut out, NAMES.embeddings_layer_norm.to_string());
    let linear =
        |out: &mut Vec<(String, Vec<usize>)>, name: String, shape: [usize; 2], bias: bool| {
            out.push((format!("{name}.weight"), shape.to_vec()));
            if bias {
                out.push((format!("{name}.bias"), vec![shape[0]]));
            }
        };
    for l in 0..config.num_hidden_layers {
        let p = NAMES.layer_prefix(l);
        if l > 0 {
            norm(&mut out, format!("{p}.attn_norm"));
        }
        linear(
            &mut out,
            format!("{p}.attn.Wqkv"),
            [3 * h, h],
            attention_bias,
        );
        linear(&mut out, format!("{p}.attn.Wo"), [h, h], attention_bias);
        norm(&mut out, format!("{p}.mlp_norm"));
        linear(&mut out, format!("{p}.mlp.Wi"), [2 * i, h], mlp_bias);
        linear(&mut out, format!("{p}.mlp.Wo"), [h, i], mlp_bias);
    }
    norm(&mut out, "final_norm".to_string());
    out
}
