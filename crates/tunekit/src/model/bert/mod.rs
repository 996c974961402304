//! BERT encoder and the sequence-classification head, written with burn's `nn` modules: the
//! first architecture behind the [`Backbone`] seam. This folder owns BERT's modules (here) and
//! its Hugging Face tensor names ([`names`]).
//!
//! The module tree mirrors Hugging Face's `BertModel` so each parameter has one obvious HF
//! tensor name (see [`names`] and [`super::weights`]); the forward pass follows `transformers`' eager BERT
//! operation by operation (post-LayerNorm residual blocks, exact-erf GELU, additive attention
//! mask), which is what the parity fixture checks.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, Linear};
use burn::tensor::activation::{gelu_approximate, relu};
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

pub mod names;

use super::backbone::{Backbone, BackboneDims, LinearRole};
use super::bf16::Precision;
use super::config::BertConfig;
use super::family::{Family, HeadActivation, Names, Positions};
use super::fused;
use super::quant::QuantLinear;

/// Token ids, segment ids and padding mask of one padded batch, already on the device.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// `[batch, seq]` token ids.
    pub input_ids: Tensor<2, Int>,
    /// `[batch, seq]` segment ids (0 for single sentences).
    pub token_type_ids: Tensor<2, Int>,
    /// `[batch, seq]` 1.0 for real tokens, 0.0 for padding.
    pub attention_mask: Tensor<2>,
}

/// Activation of the feed-forward block, from `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Exact GELU: `x Φ(x)` with `erf` (HF `gelu`).
    Gelu,
    /// Tanh approximation (HF `gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// ReLU.
    Relu,
}

impl Activation {
    fn from_hf(name: &str) -> Self {
        match name {
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            _ => Activation::Gelu,
        }
    }

    fn apply(self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Activation::Gelu => fused::gelu(x),
            Activation::GeluTanh => gelu_approximate(x),
            Activation::Relu => relu(x),
        }
    }
}

/// Word + position (+ token-type) embeddings, LayerNorm, dropout, and ELECTRA's projection to
/// the hidden size.
#[derive(Module, Debug)]
pub struct Embeddings {
    /// `embeddings.word_embeddings`.
    pub word_embeddings: Embedding,
    /// `embeddings.position_embeddings`.
    pub position_embeddings: Embedding,
    /// `embeddings.token_type_embeddings` (none in DistilBERT and MPNet).
    pub token_type_embeddings: Option<Embedding>,
    /// `embeddings.LayerNorm`.
    pub layer_norm: LayerNorm,
    /// ELECTRA's `embeddings_project` (embedding size → hidden size), when they differ.
    pub project: Option<Linear>,
    /// Hidden dropout.
    pub dropout: Dropout,
    /// How position ids are made.
    #[module(skip)]
    pub positions: Positions,
    /// Padding index of [`Positions::AfterPadding`] position ids.
    #[module(skip)]
    pub padding_idx: usize,
}

impl Embeddings {
    fn forward(
        &self,
        batch: &EncodedBatch,
        layer_norm_eps: f64,
        precision: Precision,
    ) -> Tensor<3> {
        let input_ids = batch.input_ids.clone();
        let [_, seq] = input_ids.dims();
        let mut x = self.word_embeddings.forward(input_ids);
        if let Some(types) = &self.token_type_embeddings {
            x = x + types.forward(batch.token_type_ids.clone());
        }
        // `seq` ≤ max_length ≤ the positions the table has (checked when the weights load):
        // every command builds its inputs with `TextTokenizer::for_model`, which refuses a
        // longer max_length (for `AfterPadding`, one that runs past the table from
        // `padding_idx + 1`) and truncates to it; token and segment ids are bounded there too
        // (vocab_size, type_vocab_size), so neither `narrow` nor the lookups below can go out
        // of range on user input.
        x = match self.positions {
            // Absolute positions 0..seq: the first `seq` rows, broadcast over the batch.
            Positions::Absolute => {
                x + self
                    .position_embeddings
                    .weight
                    .val()
                    .narrow(0, 0, seq)
                    .unsqueeze_dim::<3>(0)
            }
            // RoBERTa's `create_position_ids_from_input_ids`: `cumsum(mask) · mask +
            // padding_idx` (the mask is exactly `input_ids != padding_idx` for padded batches).
            Positions::AfterPadding => {
                let mask = batch.attention_mask.clone();
                let ids = (mask.clone().cumsum(1) * mask).add_scalar(self.padding_idx as f64);
                x + self.position_embeddings.forward(ids.int())
            }
        };
        let x = fused::layer_norm(&self.layer_norm, x, layer_norm_eps);
        let x = fused::dropout(&self.dropout, x);
        match &self.project {
            Some(p) => linear_2d(p, x, precision),
            None => x,
        }
    }
}

/// Multi-head self-attention (`attention.self`) with its output projection (`attention.output`).
#[derive(Module, Debug)]
pub struct Attention {
    /// `attention.self.query`.
    pub query: Linear,
    /// `attention.self.key`.
    pub key: Linear,
    /// `attention.self.value`.
    pub value: Linear,
    /// `attention.output.dense`.
    pub output: Linear,
    /// `attention.output.LayerNorm`.
    pub layer_norm: LayerNorm,
    /// Dropout on attention probabilities.
    pub attention_dropout: Dropout,
    /// Dropout on the projected output.
    pub dropout: Dropout,
    /// Number of heads.
    pub num_heads: usize,
}

impl Attention {
    fn forward(&self, x: Tensor<3>, pass: &Pass, int8: Option<&[QuantLinear; 6]>) -> Tensor<3> {
        let q = |i: usize| int8.map(|l| &l[i]);
        let query = project(&self.query, x.clone(), pass.projection(q(0)));
        let key = project(&self.key, x.clone(), pass.projection(q(1)));
        let value = project(&self.value, x.clone(), pass.projection(q(2)));
        let context = super::attention::attention(
            query,
            key,
            value,
            pass.mask_bias.clone(),
            self.num_heads,
            &self.attention_dropout,
        );
        let out = fused::dropout(
            &self.dropout,
            project(&self.output, context, pass.projection(q(3))),
        );
        fused::layer_norm(&self.layer_norm, out + x, pass.layer_norm_eps)
    }
}

/// What every layer's forward needs besides its input; the same for all layers of one pass.
struct Pass {
    /// Additive attention bias ([`attention_bias`]), plus MPNet's relative position bias
    /// (then `[batch, heads, seq, seq]`).
    mask_bias: Tensor<4>,
    /// PEFT's LoRA dropout ([`project`]).
    lora_dropout: f64,
    /// LayerNorm epsilon (burn's `LayerNorm` keeps its own private; the fused op needs it).
    layer_norm_eps: f64,
    /// Number format of the linear layers' products.
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

/// One transformer layer: attention block then feed-forward block, each post-LayerNorm.
#[derive(Module, Debug)]
pub struct Layer {
    /// Self-attention block.
    pub attention: Attention,
    /// `intermediate.dense`.
    pub intermediate: Linear,
    /// `output.dense`.
    pub output: Linear,
    /// `output.LayerNorm`.
    pub layer_norm: LayerNorm,
    /// Hidden dropout.
    pub dropout: Dropout,
    /// Feed-forward activation.
    #[module(skip)]
    pub activation: Activation,
}

impl Layer {
    fn forward(&self, x: Tensor<3>, pass: &Pass, int8: Option<&[QuantLinear; 6]>) -> Tensor<3> {
        let x = self.attention.forward(x, pass, int8);
        let q = |i: usize| int8.map(|l| &l[i]);
        let h = self.activation.apply(project(
            &self.intermediate,
            x.clone(),
            pass.projection(q(4)),
        ));
        let out = fused::dropout(
            &self.dropout,
            project(&self.output, h, pass.projection(q(5))),
        );
        fused::layer_norm(&self.layer_norm, out + x, pass.layer_norm_eps)
    }
}

/// The dense layer of a sequence-classification head over the first token's hidden state:
/// BERT's `pooler.dense` + tanh, RoBERTa's / MPNet's `classifier.dense` + tanh, ELECTRA's
/// `classifier.dense` + GELU, DistilBERT's `pre_classifier` + ReLU; ModernBERT's prediction
/// head `head.dense` + GELU + `head.norm`, which also runs on the masked mean and on every
/// token of a token head ([`super::family::SequenceHead`]).
#[derive(Module, Debug)]
pub struct Pooler {
    /// The dense layer (hidden → hidden).
    pub dense: Linear,
    /// Its activation.
    #[module(skip)]
    pub activation: HeadActivation,
    /// Whether dropout comes before the dense layer too (RoBERTa's head).
    #[module(skip)]
    pub dropout_before: bool,
    /// LayerNorm after the activation (ModernBERT's `head.norm`).
    pub norm: Option<LayerNorm>,
    /// Whether this is a prediction head that also runs on the masked mean and on every token
    /// (ModernBERT), not a pooler of token 0 only.
    #[module(skip)]
    pub prediction_head: bool,
}

impl Pooler {
    /// dense → activation (→ norm) over the last axis of `features` (`[batch, hidden]`, or
    /// `[batch, seq, hidden]` in a token head).
    pub fn forward<const D: usize>(&self, features: Tensor<D>) -> Tensor<D> {
        let y = self.dense.forward(features);
        let y = match self.activation {
            HeadActivation::Tanh => y.tanh(),
            HeadActivation::Gelu => burn::tensor::activation::gelu(y),
            HeadActivation::Relu => relu(y),
        };
        match &self.norm {
            Some(norm) => norm.forward(y),
            None => y,
        }
    }
}

/// A BERT-shaped encoder (BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA, MPNet: see
/// [`super::family`]): embeddings and the stack of post-LayerNorm layers.
#[derive(Module, Debug)]
pub struct Bert {
    /// Input embeddings.
    pub embeddings: Embeddings,
    /// `encoder.layer.{i}` (DistilBERT: `transformer.layer.{i}`).
    pub layers: Vec<Layer>,
    /// MPNet's `encoder.relative_attention_bias` `[buckets, heads]`, shared by every layer.
    pub relative_attention_bias: Option<Embedding>,
    /// The family: its tensor names and head.
    #[module(skip)]
    pub family: Family,
    /// PEFT's `lora_dropout`: dropout on the input of LoRA adapters in training (see
    /// [`project`]); 0 without LoRA.
    #[module(skip)]
    pub lora_dropout: f64,
    /// `layer_norm_eps` of the model's config, used by every LayerNorm.
    #[module(skip)]
    pub layer_norm_eps: f64,
    /// Number format of the encoder's linear-layer products (`train.precision`); f32 unless a
    /// run asks for bf16.
    #[module(skip)]
    pub precision: Precision,
    /// Int8 weights of the encoder's linear layers ([`super::quant`]); inference on a plain
    /// device uses them instead of the f32 weights.
    #[module(skip)]
    pub int8: Option<std::sync::Arc<super::quant::Int8Encoder>>,
}

/// How [`project`] computes one linear layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Projection<'a> {
    /// PEFT's LoRA dropout (0: none).
    pub lora_dropout: f64,
    /// The layer's int8 weights, used outside autodiff.
    pub int8: Option<&'a QuantLinear>,
    /// Number format of the product.
    pub precision: Precision,
}

/// `linear(x)`, with PEFT's LoRA dropout when the weight carries a LoRA adapter.
///
/// burn's LoRA folds `scale·A·B` into the weight, so its adapter sees `x`, whereas PEFT's
/// adapter sees `dropout(x)`. Adding `(dropout(x) − x)·A·B·scale` (low rank: two thin
/// matmuls) gives PEFT's output exactly, `x·W + b + dropout(x)·A·B·scale`. Outside training
/// (no autodiff) dropout is the identity and nothing is added.
///
/// With int8 weights (`int8`) and no autodiff, the product is the int8 one of
/// [`QuantLinear::forward`], on the tensor's values.
pub fn project(linear: &Linear, x: Tensor<3>, how: Projection) -> Tensor<3> {
    let Projection {
        lora_dropout,
        int8,
        precision,
    } = how;
    if let Some(q) = int8
        && !x.device().is_autodiff()
    {
        let [b, t, d_in] = x.dims();
        let device = x.device();
        let data = x.into_data();
        // The f32 values as they are (a per-element conversion only for another dtype).
        let values: Vec<f32> = match data.as_slice::<f32>() {
            Ok(v) => v.to_vec(),
            Err(_) => data.iter::<f32>().collect(),
        };
        let y = q.forward(&values, b * t);
        debug_assert_eq!(d_in, q.in_features);
        return Tensor::from_data(
            burn::tensor::TensorData::new(y, [b, t, q.out_features]),
            &device,
        );
    }
    let y = linear_2d(linear, x.clone(), precision);
    if lora_dropout <= 0.0 || !x.device().is_autodiff() {
        return y;
    }
    let Some(adapter) = linear.weight.adapter() else {
        return y;
    };
    let dropped = dropout(lora_dropout).forward(x.clone());
    let [b, t, d_in] = x.dims();
    let diff = (dropped - x).reshape([b * t, d_in]);
    let delta = diff
        .matmul(adapter.a.val())
        .matmul(adapter.b.val())
        .mul_scalar(adapter.scale);
    let d_out = delta.dims()[1];
    y + delta.reshape([b, t, d_out])
}

/// `linear(x)` on `[batch, seq, d_in]` as one `[batch·seq, d_in] × [d_in, d_out]` product.
///
/// burn's `linear` keeps a 3-D input as a batched matmul when `seq` is a multiple of 32 (a
/// GPU-tiling rule), and on the CPU backend that is `batch` small products, each packing the
/// whole weight again; folding the rows gives one large product that the GEMM parallelises
/// itself, and so does its backward (`dx`, `dW`). Same arithmetic, same result. Measured in
/// docs/benchmarks.md ("CPU engine").
pub fn linear_2d(linear: &Linear, x: Tensor<3>, precision: Precision) -> Tensor<3> {
    let [b, t, d_in] = x.dims();
    let y = fused::linear(linear, x.reshape([b * t, d_in]), precision);
    let d_out = y.dims()[1];
    y.reshape([b, t, d_out])
}

/// Additive attention bias: 0 for real tokens, a large negative number for padding, shaped
/// `[batch, 1, 1, seq]` to broadcast over heads and query positions (as `transformers` does).
pub fn attention_bias(mask: Tensor<2>) -> Tensor<4> {
    let [batch, seq] = mask.dims();
    // (1 - mask) * -1e9: exp() of it underflows to exactly 0 in f32, like HF's finfo.min.
    mask.neg()
        .add_scalar(1.0)
        .mul_scalar(-1e9)
        .reshape([batch, 1, 1, seq])
}

impl Bert {
    /// The family's table of names.
    pub fn names(&self) -> &'static Names {
        self.family.names()
    }

    /// MPNet's relative position bias `[1, heads, seq, seq]` for sequences of `seq` tokens
    /// ([`super::mpnet::position_bias`]), as a lookup of the shared table so that it trains.
    fn position_bias(&self, table: &Embedding, seq: usize) -> Tensor<4> {
        let device = table.weight.device();
        let mut buckets = Vec::with_capacity(seq * seq);
        for q in 0..seq {
            for k in 0..seq {
                buckets.push(super::mpnet::relative_position_bucket(k as i64 - q as i64) as i64);
            }
        }
        let ids = Tensor::<2, Int>::from_data(
            burn::tensor::TensorData::new(buckets, [seq, seq]),
            &device,
        );
        // [seq, seq, heads] → [1, heads, seq, seq]
        table.forward(ids).permute([2, 0, 1]).unsqueeze_dim::<4>(0)
    }

    /// Last hidden states `[batch, seq, hidden]`.
    pub fn forward(&self, batch: &EncodedBatch) -> Tensor<3> {
        let mut mask_bias = attention_bias(batch.attention_mask.clone());
        if let Some(table) = &self.relative_attention_bias {
            let seq = batch.input_ids.dims()[1];
            mask_bias = mask_bias + self.position_bias(table, seq);
        }
        let pass = Pass {
            mask_bias,
            lora_dropout: self.lora_dropout,
            layer_norm_eps: self.layer_norm_eps,
            precision: self.precision,
        };
        let mut x = self
            .embeddings
            .forward(batch, self.layer_norm_eps, self.precision);
        for (i, layer) in self.layers.iter().enumerate() {
            let int8 = self.int8.as_ref().and_then(|q| q.layers.get(i));
            x = layer.forward(x, &pass, int8);
        }
        x
    }
}

impl Backbone for Bert {
    fn model_type(&self) -> &'static str {
        self.names().model_type
    }

    fn hidden_states(&self, batch: &EncodedBatch) -> Tensor<3> {
        self.forward(batch)
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn dims(&self) -> BackboneDims {
        let [vocab_size, hidden_size] = self.embeddings.word_embeddings.weight.dims();
        let [max_position_embeddings, _] = self.embeddings.position_embeddings.weight.dims();
        BackboneDims {
            hidden_size,
            num_hidden_layers: self.layers.len(),
            intermediate_size: self
                .layers
                .first()
                .map_or(0, |l| l.intermediate.weight.dims()[1]),
            max_position_embeddings,
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
            LinearRole::Query => &l.attention.query,
            LinearRole::Key => &l.attention.key,
            LinearRole::Value => &l.attention.value,
            LinearRole::AttentionOutput => &l.attention.output,
            LinearRole::Intermediate => &l.intermediate,
            LinearRole::Output => &l.output,
        }
    }

    fn linear_mut(&mut self, layer: usize, role: LinearRole) -> &mut Linear {
        let l = &mut self.layers[layer];
        match role {
            LinearRole::Query => &mut l.attention.query,
            LinearRole::Key => &mut l.attention.key,
            LinearRole::Value => &mut l.attention.value,
            LinearRole::AttentionOutput => &mut l.attention.output,
            LinearRole::Intermediate => &mut l.intermediate,
            LinearRole::Output => &mut l.output,
        }
    }

    fn linear_name(&self, layer: usize, role: LinearRole) -> String {
        self.names().linear(layer, role)
    }

    fn prefix(&self) -> &'static str {
        self.names().prefix
    }
}

/// How a sequence is reduced to one vector for the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// HF `BertForSequenceClassification`: tanh(dense([CLS])). Exports exactly to HF.
    #[default]
    Cls,
    /// Masked mean of the last hidden states (sentence-transformers style).
    Mean,
}

/// Masked mean over the sequence: `sum(h * mask) / max(sum(mask), 1e-9)`.
pub fn mean_pool(hidden: Tensor<3>, mask: Tensor<2>) -> Tensor<2> {
    let [batch, seq, _] = hidden.dims();
    let m = mask.reshape([batch, seq, 1]);
    let summed = (hidden * m.clone()).sum_dim(1).squeeze_dim::<2>(1);
    let counts = m.sum_dim(1).squeeze_dim::<2>(1).clamp_min(1e-9);
    summed / counts
}

/// First token's hidden state `[batch, hidden]`.
pub fn cls_token(hidden: Tensor<3>) -> Tensor<2> {
    hidden.narrow(1, 0, 1).squeeze_dim::<2>(1)
}

/// Encoder + pooling + dropout + linear classifier: HF `BertForSequenceClassification` when
/// `pooling = cls`.
#[derive(Module, Debug)]
pub struct SequenceClassifier {
    /// The encoder (`bert.*`, `roberta.*`, … in HF names).
    pub encoder: super::encoder::Encoder,
    /// HF pooler, used with [`Pooling::Cls`].
    pub pooler: Option<Pooler>,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// `classifier`: hidden → classes.
    pub classifier: Linear,
    /// Pooling strategy.
    #[module(skip)]
    pub pooling: Pooling,
    /// Sequence or token head (decides the head's HF names).
    #[module(skip)]
    pub head: super::weights::HeadKind,
}

impl SequenceClassifier {
    /// What the encoder hands the head: the [CLS] hidden state (`cls` pooling; the pooler is
    /// part of the head) or the masked mean (`mean`). A frozen encoder gives the same
    /// features every epoch, so a linear probe computes them once ([`Self::head_forward`]).
    pub fn encoder_features(&self, batch: &EncodedBatch) -> Tensor<2> {
        let hidden = self.encoder.forward(batch);
        match self.pooling {
            Pooling::Cls => cls_token(hidden),
            Pooling::Mean => mean_pool(hidden, batch.attention_mask.clone()),
        }
    }

    /// The pooled sentence vector the head's classifier sees, from encoder features.
    pub fn pool_features(&self, features: Tensor<2>) -> Tensor<2> {
        match (self.pooling, &self.pooler) {
            (Pooling::Cls, Some(pooler)) => pooler.forward(features),
            (Pooling::Mean, Some(pooler)) if pooler.prediction_head => pooler.forward(features),
            _ => features,
        }
    }

    /// The pooled sentence vector the head sees.
    pub fn pooled(&self, batch: &EncodedBatch) -> Tensor<2> {
        self.pool_features(self.encoder_features(batch))
    }

    /// Class logits from encoder features (pooler, dropout, classifier; RoBERTa-style heads
    /// drop out before their dense layer too).
    pub fn head_forward(&self, features: Tensor<2>) -> Tensor<2> {
        let features = match (self.pooling, &self.pooler) {
            (Pooling::Cls, Some(p)) if p.dropout_before => self.dropout.forward(features),
            _ => features,
        };
        self.classifier
            .forward(self.dropout.forward(self.pool_features(features)))
    }

    /// Class logits `[batch, classes]`.
    pub fn forward(&self, batch: &EncodedBatch) -> Tensor<2> {
        self.head_forward(self.encoder_features(batch))
    }

    /// Number of classes of the head.
    pub fn num_classes(&self) -> usize {
        self.classifier.weight.shape().dims::<2>()[1]
    }
}

/// Build a dropout module, clamping probabilities to burn's accepted range `[0, 1)`.
pub fn dropout(prob: f64) -> Dropout {
    DropoutConfig::new(prob.clamp(0.0, 0.999)).init()
}

/// Map `hidden_act` to the activation used by [`Layer`].
pub fn activation_for(config: &BertConfig) -> Activation {
    Activation::from_hf(&config.hidden_act)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Lora, Module, ModuleMapper, Param};
    use burn::nn::LinearConfig;
    use burn::tensor::{Device, Distribution, TensorData};

    /// Gives every LoRA factor `B` (zero at initialisation) nonzero values.
    struct FillB(bool);
    impl ModuleMapper for FillB {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.0 = name == "b";
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if self.0 {
                param.map(|t| t.random_like(Distribution::Normal(0.0, 1.0)))
            } else {
                param
            }
        }
    }

    #[test]
    fn lora_dropout_drops_the_adapter_input_as_peft_does() {
        let ad = Device::flex().autodiff();
        ad.seed(3);
        let linear = LinearConfig::new(6, 5)
            .init(&ad)
            .apply_lora(Lora::new(2, 4.0))
            .map(&mut FillB(false));
        let adapter = linear.weight.adapter().expect("LoRA adapter attached");
        let x = Tensor::<3>::random([2, 3, 6], Distribution::Normal(0.0, 1.0), &ad);
        let p = 0.4;
        // Materialise the lazily initialised weight and factors now, so that they draw nothing
        // from the device RNG after the seeds below.
        let _ = crate::model::weights::to_vec(linear.forward(x.clone())).unwrap();
        // PEFT: base(x) + B(A(dropout(x))) · scale, with the same dropout mask.
        // Random draws happen when a tensor is read, so each side is read right after seeding.
        ad.seed(11);
        let g = crate::model::weights::to_vec(project(
            &linear,
            x.clone(),
            Projection {
                lora_dropout: p,
                ..Default::default()
            },
        ))
        .unwrap();
        ad.seed(11);
        let dropped = dropout(p).forward(x.clone());
        let dropped = Tensor::<3>::from_data(
            TensorData::new(crate::model::weights::to_vec(dropped).unwrap(), [2, 3, 6]),
            &ad,
        );
        // The weight's value is the merged `W + ΔW`; the frozen base is what PEFT's base sees.
        let w_base = linear.weight.val() - adapter.delta();
        let base =
            x.clone().matmul(w_base.unsqueeze()) + linear.bias.as_ref().unwrap().val().unsqueeze();
        let lora = dropped
            .reshape([6, 6])
            .matmul(adapter.a.val())
            .matmul(adapter.b.val())
            .mul_scalar(adapter.scale)
            .reshape([2, 3, 5]);
        let want = base + lora;
        let w = crate::model::weights::to_vec(want).unwrap();
        let max = g
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max < 1e-4, "max |diff| {max}");
        // The adapter's contribution really is on dropped inputs: without dropout it differs.
        let plain = crate::model::weights::to_vec(linear.forward(x.clone())).unwrap();
        let diff = g
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff > 1e-2, "dropout changed nothing: {diff}");
        // Outside training (no autodiff) it is the merged linear.
        let valid = linear.valid();
        let xv = Tensor::<3>::from_data(
            TensorData::new(crate::model::weights::to_vec(x).unwrap(), [2, 3, 6]),
            &Device::flex(),
        );
        let a = crate::model::weights::to_vec(project(
            &valid,
            xv.clone(),
            Projection {
                lora_dropout: p,
                ..Default::default()
            },
        ))
        .unwrap();
        let b = crate::model::weights::to_vec(valid.forward(xv)).unwrap();
        assert_eq!(a, b);
    }
}
