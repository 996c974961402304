//! [`Encoder`]: the encoder of a task model, one variant per kind of network behind the
//! [`Backbone`] seam. Every BERT-shaped family (BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA,
//! MPNet) is [`Encoder::Bert`] with its [`super::family::Names`] table; an architecture with
//! another block adds a variant here, its folder under `model/`, and one arm in
//! [`dispatch!`].

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;

use super::backbone::{Backbone, BackboneDims, Feature, LinearRole};
use super::bert::{Bert, EncodedBatch};
use super::bf16::Precision;

/// The encoder of a model (`bert.*`, `roberta.*`, … in HF names).
#[derive(Module, Debug)]
// One encoder per model: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Encoder {
    /// A BERT-shaped encoder ([`super::family::Family`]).
    Bert(Bert),
    /// DeBERTa-v2 / v3 ([`super::deberta_v2`]).
    DebertaV2(super::deberta_v2::DebertaV2),
    /// ModernBERT ([`super::modernbert`]).
    ModernBert(super::modernbert::ModernBert),
}

/// `$body` with `$e` bound to the variant's encoder, for every variant.
macro_rules! dispatch {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            Encoder::Bert($e) => $body,
            Encoder::DebertaV2($e) => $body,
            Encoder::ModernBert($e) => $body,
        }
    };
}

impl Encoder {
    /// Last hidden states `[batch, seq, hidden]`.
    pub fn forward(&self, batch: &EncodedBatch) -> Tensor<3> {
        dispatch!(self, e => e.hidden_states(batch))
    }

    /// The BERT-shaped encoder, if this is one (what ONNX export and int8 inference run).
    pub fn as_bert(&self) -> Option<&Bert> {
        match self {
            Encoder::Bert(b) => Some(b),
            Encoder::DebertaV2(_) => None,
            Encoder::ModernBert(_) => None,
        }
    }

    /// The same, mutable.
    pub fn as_bert_mut(&mut self) -> Option<&mut Bert> {
        match self {
            Encoder::Bert(b) => Some(b),
            Encoder::DebertaV2(_) => None,
            Encoder::ModernBert(_) => None,
        }
    }

    /// The family's table of names (BERT-shaped encoders).
    pub fn names(&self) -> &'static super::family::Names {
        dispatch!(self, e => e.names())
    }

    /// Number format of the linear-layer products.
    pub fn set_precision(&mut self, precision: Precision) {
        dispatch!(self, e => e.precision = precision)
    }

    /// Current number format of the linear-layer products.
    pub fn precision(&self) -> Precision {
        dispatch!(self, e => e.precision)
    }

    /// PEFT's `lora_dropout` for the adapters of this encoder.
    pub fn set_lora_dropout(&mut self, p: f64) {
        dispatch!(self, e => e.lora_dropout = p)
    }

    /// Int8 weights of the linear layers, when attached (never for an encoder that refuses
    /// [`Feature::Int8`]: [`super::quant`] checks before quantising or attaching).
    pub fn int8(&self) -> Option<&std::sync::Arc<super::quant::Int8Encoder>> {
        match self {
            Encoder::Bert(e) => e.int8.as_ref(),
            Encoder::DebertaV2(e) => e.int8.as_ref(),
            Encoder::ModernBert(_) => None,
        }
    }

    /// Attach (or drop, with `None`) int8 weights (not for an encoder that refuses
    /// [`Feature::Int8`]: the callers refuse it first through [`Backbone::unsupported`]).
    pub fn set_int8(&mut self, int8: Option<std::sync::Arc<super::quant::Int8Encoder>>) {
        match self {
            Encoder::Bert(e) => e.int8 = int8,
            Encoder::DebertaV2(e) => e.int8 = int8,
            Encoder::ModernBert(_) => {}
        }
    }
}

impl Backbone for Encoder {
    fn model_type(&self) -> &'static str {
        dispatch!(self, e => e.model_type())
    }

    fn hidden_states(&self, batch: &EncodedBatch) -> Tensor<3> {
        self.forward(batch)
    }

    fn num_layers(&self) -> usize {
        dispatch!(self, e => e.num_layers())
    }

    fn dims(&self) -> BackboneDims {
        dispatch!(self, e => e.dims())
    }

    fn num_heads(&self, layer: usize) -> usize {
        dispatch!(self, e => e.num_heads(layer))
    }

    fn set_num_heads(&mut self, layer: usize, heads: usize) {
        dispatch!(self, e => e.set_num_heads(layer, heads))
    }

    fn linear(&self, layer: usize, role: LinearRole) -> &Linear {
        dispatch!(self, e => e.linear(layer, role))
    }

    fn linear_mut(&mut self, layer: usize, role: LinearRole) -> &mut Linear {
        dispatch!(self, e => e.linear_mut(layer, role))
    }

    fn linear_name(&self, layer: usize, role: LinearRole) -> String {
        dispatch!(self, e => e.linear_name(layer, role))
    }

    fn prefix(&self) -> &'static str {
        dispatch!(self, e => e.prefix())
    }

    fn unsupported(&self, feature: Feature) -> Option<String> {
        dispatch!(self, e => e.unsupported(feature))
    }
}
