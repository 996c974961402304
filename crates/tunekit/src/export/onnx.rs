//! ONNX export of a fine-tuned classifier: the encoder and head as one ONNX graph (opset 17,
//! IR 8) with dynamic `batch` and `sequence` axes, inputs `input_ids`, `attention_mask`,
//! `token_type_ids` (int64) and output `logits` (float). No Python: the graph is built node by
//! node from the burn modules, following the encoder's forward pass operation by operation —
//! [`crate::model::bert`]'s for the BERT-shaped families (post-LN blocks, exact-erf GELU,
//! additive −1e9 mask bias), [`crate::model::modernbert`]'s for ModernBERT (pre-norm, rotary
//! tables, global/sliding-window attention, GeGLU) — then the head (CLS + pooler, masked mean,
//! ModernBERT's prediction head), and serialised with the `prost` messages of
//! [`super::onnx_proto`]. DeBERTa-v2/v3 follows [`crate::model::deberta_v2`] (its
//! `encoder.conv` block included). A ModernBERT or DeBERTa graph takes inputs of
//! up to `max_position_embeddings` tokens (the length of its constant tables; tunekit's tokenizer
//! truncates to `model.max_length`, which is never longer).

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::Tensor;
use prost::Message;

use super::onnx_proto as pb;
use crate::error::{Error, Result};
use crate::model::backbone::{Backbone, LinearRole};
use crate::model::bert::{Activation, Layer, Pooler, Pooling};
use crate::model::deberta_v2::DebertaV2;
use crate::model::family::{HeadActivation, Names, Positions};
use crate::model::modernbert::ModernBert;
use crate::model::quant::QuantLinear;
use crate::model::weights::head_names;
use crate::model::weights::to_vec;
use crate::model::{BertConfig, SequenceClassifier};

/// ONNX opset the graph uses (LayerNormalization needs 17).
pub const OPSET: i64 = 17;
/// ONNX IR version matching opset 17.
pub const IR_VERSION: i64 = 8;

/// Builds a graph: unique value names, nodes in order, initializers.
struct Graph {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    counter: usize,
}

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        i,
        r#type: 2,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        f,
        r#type: 1,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        ints: ints.to_vec(),
        r#type: 7,
        ..Default::default()
    }
}

impl Graph {
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Add a node with one output; returns the output name.
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: format!("{op}_{}", self.counter),
            op_type: op.into(),
            attribute: attrs,
            domain: String::new(),
        });
        out
    }

    fn float_tensor(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(pb::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: pb::FLOAT,
            name: name.into(),
            raw_data: raw,
        });
        name.to_string()
    }

    fn int_tensor(&mut self, hint: &str, dims: &[usize], data: &[i64]) -> String {
        let name = self.fresh(hint);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(pb::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: pb::INT64,
            name: name.clone(),
            raw_data: raw,
        });
        name
    }

    fn int8_tensor(&mut self, name: &str, dims: &[usize], data: &[i8]) -> String {
        self.initializers.push(pb::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: pb::INT8,
            name: name.into(),
            raw_data: data.iter().map(|&v| v as u8).collect(),
        });
        name.to_string()
    }

    /// An int8 matrix with one scale per slice along `axis`, as a `DequantizeLinear` node (the
    /// QDQ form ONNX Runtime and other runtimes read as int8 weights).
    fn dequantized(
        &mut self,
        name: &str,
        dims: [usize; 2],
        q: &[i8],
        scale: &[f32],
        axis: i64,
    ) -> String {
        let w = self.int8_tensor(&format!("{name}_quantized"), &dims, q);
        let s = self.float_tensor(&format!("{name}_scale"), &[scale.len()], scale);
        let zeros = vec![0i8; scale.len()];
        let z = self.int8_tensor(&format!("{name}_zero_point"), &[scale.len()], &zeros);
        self.op(
            "DequantizeLinear",
            &[&w, &s, &z],
            vec![attr_int("axis", axis)],
        )
    }

    fn scalar(&mut self, hint: &str, v: f32) -> String {
        let name = self.fresh(hint);
        self.float_tensor(&name, &[], &[v])
    }

    fn param<const D: usize>(&mut self, name: &str, p: &Param<Tensor<D>>) -> Result<String> {
        let t = p.val();
        let dims = t.dims();
        let data = to_vec(t)?;
        Ok(self.float_tensor(name, &dims, &data))
    }

    /// `x · W + b` (burn stores `W` as [in, out], ONNX MatMul's layout). With int8 weights
    /// (`q`), `W` is their `DequantizeLinear` (one scale per output column).
    fn linear(
        &mut self,
        name: &str,
        x: &str,
        l: &Linear,
        q: Option<&QuantLinear>,
    ) -> Result<String> {
        let w = match q {
            Some(q) => {
                let (d_in, d_out) = (q.in_features, q.out_features);
                let mut t = vec![0i8; q.weight.len()];
                for o in 0..d_out {
                    for k in 0..d_in {
                        t[k * d_out + o] = q.weight[o * d_in + k];
                    }
                }
                self.dequantized(&format!("{name}.weight"), [d_in, d_out], &t, &q.scale, 1)
            }
            None => self.param(&format!("{name}.weight"), &l.weight)?,
        };
        let y = self.op("MatMul", &[x, &w], vec![]);
        match &l.bias {
            Some(b) => {
                let b = self.param(&format!("{name}.bias"), b)?;
                Ok(self.op("Add", &[&y, &b], vec![]))
            }
            None => Ok(y),
        }
    }

    /// Sentence features of hidden states `x` `[batch, seq, hidden]`: the [CLS] state or the
    /// mean over unmasked positions (`maskf` `[batch, seq]`, float), as
    /// [`SequenceClassifier::encoder_features`].
    fn features(&mut self, x: &str, maskf: &str, pooling: Pooling) -> String {
        match pooling {
            Pooling::Cls => {
                let idx0 = self.int_tensor("idx0", &[], &[0]);
                self.op("Gather", &[x, &idx0], vec![attr_int("axis", 1)])
            }
            Pooling::Mean => {
                let axis2 = self.int_tensor("axis2", &[1], &[2]);
                let m = self.op("Unsqueeze", &[maskf, &axis2], vec![]);
                let masked = self.op("Mul", &[x, &m], vec![]);
                let axis1 = self.int_tensor("axis1", &[1], &[1]);
                let summed = self.op(
                    "ReduceSum",
                    &[&masked, &axis1],
                    vec![attr_int("keepdims", 0)],
                );
                let counts = self.op("ReduceSum", &[&m, &axis1], vec![attr_int("keepdims", 0)]);
                let tiny = self.scalar("tiny", 1e-9);
                let counts = self.op("Max", &[&counts, &tiny], vec![]);
                self.op("Div", &[&summed, &counts], vec![])
            }
        }
    }

    fn layer_norm(&mut self, name: &str, x: &str, ln: &LayerNorm, eps: f64) -> Result<String> {
        let g = self.param(&format!("{name}.weight"), &ln.gamma)?;
        let mut inputs = vec![x.to_string(), g];
        if let Some(b) = &ln.beta {
            inputs.push(self.param(&format!("{name}.bias"), b)?);
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.op(
            "LayerNormalization",
            &refs,
            vec![attr_int("axis", -1), attr_float("epsilon", eps as f32)],
        ))
    }

    fn embedding(&mut self, name: &str, e: &Embedding, ids: &str, int8: bool) -> Result<String> {
        let w = if int8 {
            // An int8 model's table: re-quantising its dequantised rows gives back exactly
            // the stored int8 values and scales.
            let t = e.weight.val();
            let [rows, cols] = t.dims();
            let (q, s) = QuantLinear::quantize_rows(&to_vec(t)?, rows, cols);
            self.dequantized(&format!("{name}.weight"), [rows, cols], &q, &s, 0)
        } else {
            self.param(&format!("{name}.weight"), &e.weight)?
        };
        Ok(self.op("Gather", &[&w, ids], vec![attr_int("axis", 0)]))
    }

    /// MPNet's relative position bias `[1, heads, seq, seq]` for the input's length: the
    /// bucket of every `key − query` offset looked up in a constant table (offsets span
    /// `±(max_position_embeddings − 1)`), then the rows of the bias table `[buckets, heads]`.
    fn mpnet_position_bias(
        &mut self,
        name: &str,
        table: &Embedding,
        config: &BertConfig,
    ) -> Result<String> {
        let span = config.max_position_embeddings.max(1) as i64;
        let lookup: Vec<i64> = (-(span - 1)..span)
            .map(|rel| crate::model::mpnet::relative_position_bucket(rel) as i64)
            .collect();
        let lookup = self.int_tensor("mpnet_buckets", &[lookup.len()], &lookup);
        let shape = self.op("Shape", &["input_ids"], vec![]);
        let one_idx = self.int_tensor("idx1", &[], &[1]);
        let seq = self.op("Gather", &[&shape, &one_idx], vec![attr_int("axis", 0)]);
        let zero = self.int_tensor("zero", &[], &[0]);
        let step = self.int_tensor("one", &[], &[1]);
        let r = self.op("Range", &[&zero, &seq, &step], vec![]);
        let ax1 = self.int_tensor("axis1", &[1], &[1]);
        let ax0 = self.int_tensor("axis0", &[1], &[0]);
        let query = self.op("Unsqueeze", &[&r, &ax1], vec![]);
        let key = self.op("Unsqueeze", &[&r, &ax0], vec![]);
        let rel = self.op("Sub", &[&key, &query], vec![]);
        let shift = self.int_tensor("rel_shift", &[], &[span - 1]);
        let rel = self.op("Add", &[&rel, &shift], vec![]);
        let buckets = self.op("Gather", &[&lookup, &rel], vec![attr_int("axis", 0)]);
        let w = self.param(&format!("{name}.weight"), &table.weight)?;
        let values = self.op("Gather", &[&w, &buckets], vec![attr_int("axis", 0)]);
        let values = self.op("Transpose", &[&values], vec![attr_ints("perm", &[2, 0, 1])]);
        let ax0 = self.int_tensor("axis0", &[1], &[0]);
        Ok(self.op("Unsqueeze", &[&values, &ax0], vec![]))
    }

    fn activation(&mut self, act: Activation, x: &str) -> String {
        match act {
            // x · ½ · (1 + erf(x / √2)): torch's and burn's exact GELU.
            Activation::Gelu => {
                let sqrt2 = self.scalar("sqrt2", std::f32::consts::SQRT_2);
                let half = self.scalar("half", 0.5);
                let one = self.scalar("one", 1.0);
                let d = self.op("Div", &[x, &sqrt2], vec![]);
                let e = self.op("Erf", &[&d], vec![]);
                let a = self.op("Add", &[&e, &one], vec![]);
                let m = self.op("Mul", &[x, &a], vec![]);
                self.op("Mul", &[&m, &half], vec![])
            }
            // ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
            Activation::GeluTanh => {
                let c = self.scalar("c", (2.0f32 / std::f32::consts::PI).sqrt());
                let k = self.scalar("k", 0.044715);
                let half = self.scalar("half", 0.5);
                let one = self.scalar("one", 1.0);
                let x2 = self.op("Mul", &[x, x], vec![]);
                let x3 = self.op("Mul", &[&x2, x], vec![]);
                let kx3 = self.op("Mul", &[&x3, &k], vec![]);
                let inner = self.op("Add", &[x, &kx3], vec![]);
                let scaled = self.op("Mul", &[&inner, &c], vec![]);
                let t = self.op("Tanh", &[&scaled], vec![]);
                let a = self.op("Add", &[&t, &one], vec![]);
                let m = self.op("Mul", &[x, &a], vec![]);
                self.op("Mul", &[&m, &half], vec![])
            }
            Activation::Relu => self.op("Relu", &[x], vec![]),
        }
    }

    /// A BERT-shaped encoder ([`crate::model::bert`]'s forward pass: BERT, RoBERTa, XLM-R,
    /// DistilBERT, ELECTRA, MPNet), with the padding `bias` `[batch, 1, 1, seq]`. Returns the
    /// hidden states `[batch, seq, hidden]`.
    fn bert(
        &mut self,
        bert: &crate::model::bert::Bert,
        config: &BertConfig,
        bias: &str,
    ) -> Result<String> {
        let eps = config.layer_norm_eps;
        let names = bert.names();
        let pre = names.prefix;
        let emb = &bert.embeddings;
        let int8 = bert.int8.as_deref();
        let words = self.embedding(
            &format!("{pre}{}", names.word_embeddings),
            &emb.word_embeddings,
            "input_ids",
            int8.is_some(),
        )?;
        let positions = match emb.positions {
            // Positions 0..seq.
            Positions::Absolute => {
                let shape = self.op("Shape", &["input_ids"], vec![]);
                let one_idx = self.int_tensor("idx1", &[], &[1]);
                let seq = self.op("Gather", &[&shape, &one_idx], vec![attr_int("axis", 0)]);
                let zero = self.int_tensor("zero", &[], &[0]);
                let step = self.int_tensor("one", &[], &[1]);
                self.op("Range", &[&zero, &seq, &step], vec![])
            }
            // cumsum(mask) · mask + padding_idx, as RoBERTa's position ids.
            Positions::AfterPadding => {
                let axis = self.int_tensor("axis_seq", &[], &[1]);
                let sum = self.op("CumSum", &["attention_mask", &axis], vec![]);
                let counted = self.op("Mul", &[&sum, "attention_mask"], vec![]);
                let pad = self.int_tensor("padding_idx", &[], &[emb.padding_idx as i64]);
                self.op("Add", &[&counted, &pad], vec![])
            }
        };
        let pos = self.embedding(
            &format!("{pre}{}", names.position_embeddings),
            &emb.position_embeddings,
            &positions,
            false,
        )?;
        let mut x = self.op("Add", &[&words, &pos], vec![]);
        if let (Some(name), Some(table)) = (names.token_type_embeddings, &emb.token_type_embeddings)
        {
            let types = self.embedding(&format!("{pre}{name}"), table, "token_type_ids", false)?;
            x = self.op("Add", &[&x, &types], vec![]);
        }
        let mut x = self.layer_norm(
            &format!("{pre}{}", names.embeddings_layer_norm),
            &x,
            &emb.layer_norm,
            eps,
        )?;
        if let (Some(name), Some(project)) = (names.embeddings_project, &emb.project) {
            x = self.linear(&format!("{pre}{name}"), &x, project, None)?;
        }

        let mut bias = bias.to_string();
        if let (Some(name), Some(table)) =
            (names.relative_attention_bias, &bert.relative_attention_bias)
        {
            let position_bias = self.mpnet_position_bias(&format!("{pre}{name}"), table, config)?;
            bias = self.op("Add", &[&bias, &position_bias], vec![]);
        }

        for (i, layer) in bert.layers.iter().enumerate() {
            let q = int8.and_then(|e| e.layers.get(i));
            let at = LayerInputs {
                names,
                bias: &bias,
                eps,
            };
            x = self.layer(&at, i, layer, &x, q)?;
        }
        Ok(x)
    }

    /// `Slice` of `x` along `axis` from `start` to `end` (constants).
    fn slice(&mut self, x: &str, axis: i64, start: i64, end: i64) -> String {
        let s = self.int_tensor("slice_start", &[1], &[start]);
        let e = self.int_tensor("slice_end", &[1], &[end]);
        let a = self.int_tensor("slice_axis", &[1], &[axis]);
        self.op("Slice", &[x, &s, &e, &a], vec![])
    }

    /// The input's sequence length, a scalar int64.
    fn seq_len(&mut self) -> String {
        let shape = self.op("Shape", &["input_ids"], vec![]);
        let one_idx = self.int_tensor("idx1", &[], &[1]);
        self.op("Gather", &[&shape, &one_idx], vec![attr_int("axis", 0)])
    }

    /// ModernBERT's rotary tables for the input's length: `cos`, `sin` `[1, seq, 1, head_dim]`,
    /// the first `seq` rows of constant tables over `max_position_embeddings` positions, with
    /// the values of [`crate::model::modernbert::rotary_table`] (so the graph rotates exactly as
    /// tunekit does).
    fn rotary(&mut self, theta: f64, max_pos: usize, head_dim: usize) -> [String; 2] {
        let (cos, sin) = crate::model::modernbert::rotary_table(theta, max_pos, head_dim);
        let seq = self.seq_len();
        let zero = self.int_tensor("zero1", &[1], &[0]);
        let axis0 = self.int_tensor("axis0", &[1], &[0]);
        let axes = self.int_tensor("axes02", &[2], &[0, 2]);
        let ax = self.int_tensor("axis0", &[1], &[0]);
        let end = self.op("Unsqueeze", &[&seq, &ax], vec![]);
        [("rope_cos", cos), ("rope_sin", sin)].map(|(hint, table)| {
            let name = self.fresh(hint);
            let t = self.float_tensor(&name, &[max_pos, head_dim], &table);
            let rows = self.op("Slice", &[&t, &zero, &end, &axis0], vec![]);
            self.op("Unsqueeze", &[&rows, &axes], vec![])
        })
    }

    /// `x · cos + rotate_half(x) · sin` per head of `x` `[batch, seq, heads·head_dim]`,
    /// returned as `[batch, seq, heads, head_dim]`.
    fn apply_rotary(&mut self, x: &str, heads: usize, d: usize, rope: &[String; 2]) -> String {
        let split = self.int_tensor("split_shape", &[4], &[0, 0, heads as i64, d as i64]);
        let x = self.op("Reshape", &[x, &split], vec![]);
        let half = (d / 2) as i64;
        let x1 = self.slice(&x, 3, 0, half);
        let x2 = self.slice(&x, 3, half, d as i64);
        let neg = self.op("Neg", &[&x2], vec![]);
        let rotated = self.op("Concat", &[&neg, &x1], vec![attr_int("axis", 3)]);
        let a = self.op("Mul", &[&x, &rope[0]], vec![]);
        let b = self.op("Mul", &[&rotated, &rope[1]], vec![]);
        self.op("Add", &[&a, &b], vec![])
    }

    /// Scaled dot-product attention of `q`, `k`, `v` `[batch, seq, heads, head_dim]` with the
    /// additive `bias`; the context merged back to `[batch, seq, heads·head_dim]`.
    fn attend(&mut self, q: &str, k: &str, v: &str, bias: &str, head_dim: usize) -> String {
        let q = self.op("Transpose", &[q], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let kt = self.op("Transpose", &[k], vec![attr_ints("perm", &[0, 2, 3, 1])]);
        let v = self.op("Transpose", &[v], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let scores = self.op("MatMul", &[&q, &kt], vec![]);
        let scale = self.scalar("scale", (head_dim as f32).sqrt());
        let scores = self.op("Div", &[&scores, &scale], vec![]);
        self.softmax_context(&scores, bias, &v)
    }

    /// `softmax(scores + bias) · v` for `scores` `[batch, heads, seq, seq]` and `v`
    /// `[batch, heads, seq, head_dim]`, merged back to `[batch, seq, heads·head_dim]`.
    fn softmax_context(&mut self, scores: &str, bias: &str, v: &str) -> String {
        let scores = self.op("Add", &[scores, bias], vec![]);
        let probs = self.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let ctx = self.op("MatMul", &[&probs, v], vec![]);
        let ctx = self.op("Transpose", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let merge = self.int_tensor("merge_shape", &[3], &[0, 0, -1]);
        self.op("Reshape", &[&ctx, &merge], vec![])
    }

    /// The rest of a post-LayerNorm layer (BERT's and DeBERTa's) after the attention context
    /// `ctx`: `x1 = LN(x + ctx·Wo)`, then `LN(x1 + act(x1·Wi)·Wout)`. `linears`: attention
    /// output, intermediate, output; `norms`: attention and output LayerNorms; `int8`: the
    /// layer's six int8 products (the last three used here).
    #[allow(clippy::too_many_arguments)]
    fn post_ln_tail(
        &mut self,
        names: &Names,
        p: &str,
        ctx: &str,
        x: &str,
        linears: [&Linear; 3],
        norms: [&LayerNorm; 2],
        act: Activation,
        int8: Option<&[QuantLinear; 6]>,
        eps: f64,
    ) -> Result<String> {
        let qz = |j: usize| int8.map(|l| &l[j]);
        let lin = |role: LinearRole| format!("{p}.{}", names.linear_module(role));
        let out = self.linear(&lin(LinearRole::AttentionOutput), ctx, linears[0], qz(3))?;
        let res = self.op("Add", &[&out, x], vec![]);
        let x1 = self.layer_norm(
            &format!("{p}.{}", names.attention_layer_norm),
            &res,
            norms[0],
            eps,
        )?;
        let h = self.linear(&lin(LinearRole::Intermediate), &x1, linears[1], qz(4))?;
        let h = self.activation(act, &h);
        let out = self.linear(&lin(LinearRole::Output), &h, linears[2], qz(5))?;
        let res = self.op("Add", &[&out, &x1], vec![]);
        self.layer_norm(
            &format!("{p}.{}", names.output_layer_norm),
            &res,
            norms[1],
            eps,
        )
    }

    /// ModernBERT's encoder ([`crate::model::modernbert`]'s forward pass, operation by
    /// operation): token embeddings and their norm, pre-norm layers with rotary attention
    /// (global θ and every key, or local θ and keys within `half_window` positions), GeGLU
    /// MLPs, `final_norm`. `bias`: the padding bias `[batch, 1, 1, seq]`. Returns the hidden
    /// states `[batch, seq, hidden]`.
    fn modernbert(&mut self, m: &ModernBert, bias: &str) -> Result<String> {
        let names = m.names();
        let pre = names.prefix;
        let eps = m.norm_eps;
        let words = self.embedding(
            &format!("{pre}{}", names.word_embeddings),
            &m.tok_embeddings,
            "input_ids",
            false,
        )?;
        let mut x = self.layer_norm(
            &format!("{pre}{}", names.embeddings_layer_norm),
            &words,
            &m.embeddings_norm,
            eps,
        )?;
        let hidden = m.tok_embeddings.weight.dims()[1];
        let heads = m.layers.first().map_or(1, |l| l.num_heads.max(1));
        let head_dim = hidden / heads;
        let max_pos = m.max_position_embeddings.max(1);
        let global_rope = self.rotary(m.global_rope_theta, max_pos, head_dim);
        let local = if m.layers.iter().any(|l| l.local) {
            // 0 where |q − k| ≤ half_window, −1e9 elsewhere, added to the padding bias.
            let seq = self.seq_len();
            let zero = self.int_tensor("zero", &[], &[0]);
            let step = self.int_tensor("one", &[], &[1]);
            let r = self.op("Range", &[&zero, &seq, &step], vec![]);
            let ax1 = self.int_tensor("axis1", &[1], &[1]);
            let ax0 = self.int_tensor("axis0", &[1], &[0]);
            let qpos = self.op("Unsqueeze", &[&r, &ax1], vec![]);
            let kpos = self.op("Unsqueeze", &[&r, &ax0], vec![]);
            let diff = self.op("Sub", &[&qpos, &kpos], vec![]);
            let dist = self.op("Abs", &[&diff], vec![]);
            let half = self.int_tensor("half_window", &[], &[m.half_window as i64]);
            let outside = self.op("Greater", &[&dist, &half], vec![]);
            let big = self.scalar("neg_big", -1e9);
            let none = self.scalar("zero_f", 0.0);
            let window = self.op("Where", &[&outside, &big, &none], vec![]);
            let local_bias = self.op("Add", &[bias, &window], vec![]);
            let rope = self.rotary(m.local_rope_theta, max_pos, head_dim);
            Some((local_bias, rope))
        } else {
            None
        };
        for (i, layer) in m.layers.iter().enumerate() {
            let (bias, rope) = match (&local, layer.local) {
                (Some((b, r)), true) => (b.as_str(), r),
                _ => (bias, &global_rope),
            };
            let p = format!("{pre}{}", names.layer_prefix(i));
            let h = match &layer.attn_norm {
                Some(n) => self.layer_norm(&format!("{p}.attn_norm"), &x, n, eps)?,
                None => x.clone(),
            };
            let qkv = self.linear(&format!("{p}.attn.Wqkv"), &h, &layer.wqkv, None)?;
            let width = (layer.wqkv.weight.dims()[1] / 3) as i64;
            let q = self.slice(&qkv, 2, 0, width);
            let k = self.slice(&qkv, 2, width, 2 * width);
            let v = self.slice(&qkv, 2, 2 * width, 3 * width);
            let d = width as usize / layer.num_heads.max(1);
            let q = self.apply_rotary(&q, layer.num_heads, d, rope);
            let k = self.apply_rotary(&k, layer.num_heads, d, rope);
            let split = self.int_tensor(
                "split_shape",
                &[4],
                &[0, 0, layer.num_heads as i64, d as i64],
            );
            let v = self.op("Reshape", &[&v, &split], vec![]);
            let ctx = self.attend(&q, &k, &v, bias, d);
            let out = self.linear(&format!("{p}.attn.Wo"), &ctx, &layer.wo, None)?;
            x = self.op("Add", &[&x, &out], vec![]);
            let h = self.layer_norm(&format!("{p}.mlp_norm"), &x, &layer.mlp_norm, eps)?;
            let wi = self.linear(&format!("{p}.mlp.Wi"), &h, &layer.wi, None)?;
            let inter = (layer.wi.weight.dims()[1] / 2) as i64;
            let input = self.slice(&wi, 2, 0, inter);
            let gate = self.slice(&wi, 2, inter, 2 * inter);
            let act = self.activation(m.activation, &input);
            let h = self.op("Mul", &[&act, &gate], vec![]);
            let out = self.linear(&format!("{p}.mlp.Wo"), &h, &layer.mlp_wo, None)?;
            x = self.op("Add", &[&x, &out], vec![]);
        }
        self.layer_norm(&format!("{pre}final_norm"), &x, &m.final_norm, eps)
    }

    /// DeBERTa-v2/v3's encoder ([`crate::model::deberta_v2`]'s forward pass, operation by
    /// operation): embeddings (× attention mask), disentangled attention with the
    /// content→position and position→content terms gathered at `δ(i, j)` (a constant lookup
    /// over every offset `i − j` of up to `max_position_embeddings` tokens), post-LayerNorm
    /// blocks, and the convolution block after layer 0 (`conv_kernel_size`). `bias`: the
    /// padding bias `[batch, 1, 1, seq]`; `maskf`: the float mask `[batch, seq]`. Returns the
    /// hidden states `[batch, seq, hidden]`.
    fn deberta(&mut self, m: &DebertaV2, bias: &str, maskf: &str) -> Result<String> {
        use crate::model::deberta_v2::{make_log_bucket_position, names as dn};
        let names = m.names();
        let pre = names.prefix;
        let eps = m.layer_norm_eps;
        let o = &m.options;
        let int8 = m.int8.as_deref();
        let e = &m.embeddings;
        let mut x = self.embedding(
            &format!("{pre}{}", names.word_embeddings),
            &e.word_embeddings,
            "input_ids",
            int8.is_some(),
        )?;
        let seq = self.seq_len();
        let zero = self.int_tensor("zero", &[], &[0]);
        let step = self.int_tensor("one", &[], &[1]);
        let r = self.op("Range", &[&zero, &seq, &step], vec![]);
        if let Some(pos) = &e.position_embeddings {
            let p = self.embedding(
                &format!("{pre}{}", names.position_embeddings),
                pos,
                &r,
                false,
            )?;
            x = self.op("Add", &[&x, &p], vec![]);
        }
        if let (Some(name), Some(types)) = (names.token_type_embeddings, &e.token_type_embeddings) {
            let t = self.embedding(&format!("{pre}{name}"), types, "token_type_ids", false)?;
            x = self.op("Add", &[&x, &t], vec![]);
        }
        if let Some(proj) = &e.embed_proj {
            x = self.linear(&format!("{pre}{}", dn::EMBED_PROJ), &x, proj, None)?;
        }
        let x = self.layer_norm(
            &format!("{pre}{}", names.embeddings_layer_norm),
            &x,
            &e.layer_norm,
            eps,
        )?;
        let ax2 = self.int_tensor("axis2", &[1], &[2]);
        let m3 = self.op("Unsqueeze", &[maskf, &ax2], vec![]);
        let emb = self.op("Mul", &[&x, &m3], vec![]);
        let mut x = emb.clone();

        // Relative embeddings (normed) and δ(i, j) `[seq, seq]`.
        let rel = match &m.rel_embeddings {
            Some(table) => {
                let w = self.param(
                    &format!("{pre}{}.weight", dn::REL_EMBEDDINGS),
                    &table.weight,
                )?;
                let w = match &m.rel_layer_norm {
                    Some(ln) => {
                        self.layer_norm(&format!("{pre}{}", dn::REL_LAYER_NORM), &w, ln, eps)?
                    }
                    None => w,
                };
                let span = o.att_span() as i64;
                let limit = m.max_position_embeddings.max(1) as i64;
                let lookup: Vec<i64> = (-(limit - 1)..limit)
                    .map(|d| {
                        let r = match o.position_buckets {
                            Some(bk) => make_log_bucket_position(d, bk, o.max_relative_positions),
                            None => d,
                        };
                        (r + span).clamp(0, 2 * span - 1)
                    })
                    .collect();
                let lookup = self.int_tensor("deberta_delta", &[lookup.len()], &lookup);
                let ax1 = self.int_tensor("axis1", &[1], &[1]);
                let ax0 = self.int_tensor("axis0", &[1], &[0]);
                let qpos = self.op("Unsqueeze", &[&r, &ax1], vec![]);
                let kpos = self.op("Unsqueeze", &[&r, &ax0], vec![]);
                let diff = self.op("Sub", &[&qpos, &kpos], vec![]);
                let shift = self.int_tensor("rel_shift", &[], &[limit - 1]);
                let at = self.op("Add", &[&diff, &shift], vec![]);
                let delta = self.op("Gather", &[&lookup, &at], vec![attr_int("axis", 0)]);
                let delta_t = self.op("Transpose", &[&delta], vec![attr_ints("perm", &[1, 0])]);
                Some((w, delta, delta_t))
            }
            None => None,
        };
        let scale_factor = o.scale_factor();
        for (i, layer) in m.layers.iter().enumerate() {
            let q8 = int8.and_then(|e| e.layers.get(i));
            let qz = |j: usize| q8.map(|l| &l[j]);
            let a = &layer.attention;
            let p = format!("{pre}{}", names.layer_prefix(i));
            let lin = |role: LinearRole| format!("{p}.{}", names.linear_module(role));
            let h = a.num_heads.max(1);
            let width = a.query_proj.weight.dims()[1];
            let d = width / h;
            let split = self.int_tensor("split_shape", &[4], &[0, 0, h as i64, d as i64]);
            let heads = |g: &mut Graph, t: &str| {
                let t = g.op("Reshape", &[t, &split], vec![]);
                g.op("Transpose", &[&t], vec![attr_ints("perm", &[0, 2, 1, 3])])
            };
            let q = self.linear(&lin(LinearRole::Query), &x, &a.query_proj, qz(0))?;
            let k = self.linear(&lin(LinearRole::Key), &x, &a.key_proj, qz(1))?;
            let v = self.linear(&lin(LinearRole::Value), &x, &a.value_proj, qz(2))?;
            let (qh, kh, vh) = (heads(self, &q), heads(self, &k), heads(self, &v));
            // sqrt(d · scale_factor) in f32, as transformers' `scaled_size_sqrt`.
            let scale = self.scalar("scale", ((d as f32) * scale_factor as f32).sqrt());
            let kt = self.op("Transpose", &[&kh], vec![attr_ints("perm", &[0, 1, 3, 2])]);
            let scores = self.op("MatMul", &[&qh, &kt], vec![]);
            let mut scores = self.op("Div", &[&scores, &scale], vec![]);
            if let Some((rel, delta, delta_t)) = &rel {
                // Positions `[2span, H·d]` → `[H, d, 2span]`; content `[B, H, S, d]` against
                // them → `[B, H, S, 2span]`.
                let pos_heads = |g: &mut Graph, t: &str| {
                    let shape = g.int_tensor("pos_shape", &[3], &[0, h as i64, d as i64]);
                    let t = g.op("Reshape", &[t, &shape], vec![]);
                    g.op("Transpose", &[&t], vec![attr_ints("perm", &[1, 2, 0])])
                };
                let shape = self.op("Shape", &[&scores], vec![]);
                if o.c2p {
                    let pk = match (&a.pos_key_proj, o.share_att_key) {
                        (Some(pp), false) => {
                            self.linear(&format!("{p}.{}", dn::POS_KEY_PROJ), rel, pp, None)?
                        }
                        _ => self.linear(&lin(LinearRole::Key), rel, &a.key_proj, qz(1))?,
                    };
                    let pk = pos_heads(self, &pk);
                    let all = self.op("MatMul", &[&qh, &pk], vec![]);
                    let idx = self.op("Expand", &[delta, &shape], vec![]);
                    let c2p = self.op("GatherElements", &[&all, &idx], vec![attr_int("axis", 3)]);
                    let c2p = self.op("Div", &[&c2p, &scale], vec![]);
                    scores = self.op("Add", &[&scores, &c2p], vec![]);
                }
                if o.p2c {
                    let pq = match (&a.pos_query_proj, o.share_att_key) {
                        (Some(pp), false) => {
                            self.linear(&format!("{p}.{}", dn::POS_QUERY_PROJ), rel, pp, None)?
                        }
                        _ => self.linear(&lin(LinearRole::Query), rel, &a.query_proj, qz(0))?,
                    };
                    let pq = pos_heads(self, &pq);
                    let all = self.op("MatMul", &[&kh, &pq], vec![]);
                    let idx = self.op("Expand", &[delta_t, &shape], vec![]);
                    let g = self.op("GatherElements", &[&all, &idx], vec![attr_int("axis", 3)]);
                    let p2c = self.op("Transpose", &[&g], vec![attr_ints("perm", &[0, 1, 3, 2])]);
                    let p2c = self.op("Div", &[&p2c, &scale], vec![]);
                    scores = self.op("Add", &[&scores, &p2c], vec![]);
                }
            }
            let ctx = self.softmax_context(&scores, bias, &vh);
            x = self.post_ln_tail(
                names,
                &p,
                &ctx,
                &x,
                [&a.output, &layer.intermediate, &layer.output],
                [&a.layer_norm, &layer.layer_norm],
                layer.activation,
                q8,
                eps,
            )?;
            if i == 0
                && let Some(conv) = &m.conv
            {
                x = self.deberta_conv(conv, &emb, &x, &m3, eps)?;
            }
        }
        Ok(x)
    }

    /// DeBERTa's `encoder.conv` after layer 0: `LayerNorm(layer0 + act(mask · conv(emb))) ·
    /// mask`, the convolution as ONNX `Conv` over `[batch, hidden, seq]` with HF's weight
    /// layout `[out, in, kernel]` and `(kernel − 1) / 2` zeros each side.
    fn deberta_conv(
        &mut self,
        conv: &crate::model::deberta_v2::ConvBlock,
        emb: &str,
        layer0: &str,
        m3: &str,
        eps: f64,
    ) -> Result<String> {
        use crate::model::deberta_v2::names as dn;
        let w = conv.weight.val();
        let [kernel, d_in, d_out] = w.dims();
        let stored = to_vec(w)?;
        // [kernel, in, out] → [out, in, kernel].
        let mut hf = vec![0.0f32; stored.len()];
        for k in 0..kernel {
            for i in 0..d_in {
                for o in 0..d_out {
                    hf[(o * d_in + i) * kernel + k] = stored[(k * d_in + i) * d_out + o];
                }
            }
        }
        let pre = dn::PREFIX;
        let wname = format!("{pre}{}.weight", dn::CONV);
        let w = self.float_tensor(&wname, &[d_out, d_in, kernel], &hf);
        let b = self.param(&format!("{pre}{}.bias", dn::CONV), &conv.bias)?;
        let pad = ((kernel - 1) / 2) as i64;
        let xt = self.op("Transpose", &[emb], vec![attr_ints("perm", &[0, 2, 1])]);
        let y = self.op(
            "Conv",
            &[&xt, &w, &b],
            vec![
                attr_ints("kernel_shape", &[kernel as i64]),
                attr_ints("pads", &[pad, pad]),
            ],
        );
        let y = self.op("Transpose", &[&y], vec![attr_ints("perm", &[0, 2, 1])]);
        let y = self.op("Mul", &[&y, m3], vec![]);
        let y = match conv.act {
            HeadActivation::Gelu => self.activation(Activation::Gelu, &y),
            HeadActivation::Tanh => self.op("Tanh", &[&y], vec![]),
            HeadActivation::Relu => self.op("Relu", &[&y], vec![]),
        };
        let res = self.op("Add", &[layer0, &y], vec![]);
        let ln = self.layer_norm(
            &format!("{pre}{}", dn::CONV_LAYER_NORM),
            &res,
            &conv.layer_norm,
            eps,
        )?;
        Ok(self.op("Mul", &[&ln, m3], vec![]))
    }

    /// A head's dense → activation (→ norm, with epsilon `eps`) ([`Pooler::forward`]) over the
    /// last axis of `x`; `dense_name` is the dense layer's HF name, the norm is `head.norm`
    /// (ModernBERT's, the one family with a head norm).
    fn pooler(&mut self, dense_name: &str, x: &str, p: &Pooler, eps: f64) -> Result<String> {
        let d = self.linear(dense_name, x, &p.dense, None)?;
        let a = match p.activation {
            HeadActivation::Tanh => self.op("Tanh", &[&d], vec![]),
            HeadActivation::Relu => self.op("Relu", &[&d], vec![]),
            HeadActivation::Gelu => self.activation(Activation::Gelu, &d),
        };
        match &p.norm {
            Some(n) => self.layer_norm("head.norm", &a, n, eps),
            None => Ok(a),
        }
    }

    /// Layer `i` of the encoder (`at.bias`: the additive attention bias, `at.eps`: LayerNorm
    /// epsilon, `at.names`: the family's tensor names).
    fn layer(
        &mut self,
        at: &LayerInputs<'_>,
        i: usize,
        layer: &Layer,
        x: &str,
        int8: Option<&[QuantLinear; 6]>,
    ) -> Result<String> {
        let (names, bias, eps) = (at.names, at.bias, at.eps);
        let a = &layer.attention;
        let qz = |j: usize| int8.map(|l| &l[j]);
        let heads = a.num_heads;
        // Projection width: `hidden`, or less after head pruning.
        let width = a.query.weight.dims()[1];
        let head_dim = width / heads;
        let p = format!("{}{}", names.prefix, names.layer_prefix(i));
        let lin = |role: LinearRole| format!("{p}.{}", names.linear_module(role));
        let split = self.int_tensor("split_shape", &[4], &[0, 0, heads as i64, head_dim as i64]);
        let q = self.linear(&lin(LinearRole::Query), x, &a.query, qz(0))?;
        let k = self.linear(&lin(LinearRole::Key), x, &a.key, qz(1))?;
        let v = self.linear(&lin(LinearRole::Value), x, &a.value, qz(2))?;
        let q = self.op("Reshape", &[&q, &split], vec![]);
        let k = self.op("Reshape", &[&k, &split], vec![]);
        let v = self.op("Reshape", &[&v, &split], vec![]);
        let ctx = self.attend(&q, &k, &v, bias, head_dim);
        self.post_ln_tail(
            names,
            &p,
            &ctx,
            x,
            [&a.output, &layer.intermediate, &layer.output],
            [&a.layer_norm, &layer.layer_norm],
            layer.activation,
            int8,
            eps,
        )
    }
}

fn input(name: &str, elem_type: i32, dims: &[&str]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            tensor_type: Some(pb::TensorTypeProto {
                elem_type,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| match d.parse::<i64>() {
                            Ok(v) => pb::Dimension {
                                dim_value: Some(v),
                                dim_param: None,
                            },
                            Err(_) => pb::Dimension {
                                dim_value: None,
                                dim_param: Some(d.to_string()),
                            },
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

/// The serialised ONNX model of `model` (inference mode; LoRA adapters already merged), a
/// sequence classifier: output `logits` `[batch, labels]`.
pub fn to_onnx(model: &SequenceClassifier, config: &BertConfig) -> Result<Vec<u8>> {
    to_onnx_task(model, config, crate::task::TaskKind::Classification)
}

/// What every layer of the graph shares.
struct LayerInputs<'a> {
    names: &'a Names,
    bias: &'a str,
    eps: f64,
}

/// The serialised ONNX model of `model` with the outputs of task `kind`:
/// - classification, pair classification, multilabel, regression: `logits` `[batch, labels]`
///   (multilabel: one logit per label, sigmoid not applied; regression: `[batch, 1]`);
/// - token classification: `logits` `[batch, sequence, tags]` (every piece through the head's
///   classifier, as `BertForTokenClassification`);
/// - embedding: `sentence_embedding` `[batch, hidden]`, the pooled encoder output (the model's
///   trained pooling) L2-normalised, as `tunekit predict` and sentence-transformers give it.
pub fn to_onnx_task(
    model: &SequenceClassifier,
    config: &BertConfig,
    kind: crate::task::TaskKind,
) -> Result<Vec<u8>> {
    use crate::task::TaskKind;
    let eps = config.layer_norm_eps;
    let mut g = Graph {
        nodes: Vec::new(),
        initializers: Vec::new(),
        counter: 0,
    };
    let maskf = g.op(
        "Cast",
        &["attention_mask"],
        vec![attr_int("to", i64::from(pb::FLOAT))],
    );
    // Additive mask bias (1 − mask)·(−1e9), shaped [batch, 1, 1, seq].
    let one = g.scalar("one", 1.0);
    let big = g.scalar("neg_big", -1e9);
    let inv = g.op("Sub", &[&one, &maskf], vec![]);
    let bias = g.op("Mul", &[&inv, &big], vec![]);
    let axes = g.int_tensor("axes12", &[2], &[1, 2]);
    let bias = g.op("Unsqueeze", &[&bias, &axes], vec![]);
    let (x, names) = match &model.encoder {
        crate::model::Encoder::ModernBert(m) => (g.modernbert(m, &bias)?, m.names()),
        crate::model::Encoder::DebertaV2(m) => (g.deberta(m, &bias, &maskf)?, m.names()),
        encoder => match encoder.as_bert() {
            Some(bert) => (g.bert(bert, config, &bias)?, bert.names()),
            None => {
                return Err(Error::Model(format!(
                    "ONNX export of {} models is not implemented",
                    model.encoder.model_type()
                )));
            }
        },
    };

    let (dense_name, head_out) = head_names(names, model.head);
    let (out_value, out_name) = match kind {
        TaskKind::TokenClassification => {
            // A prediction head (ModernBERT's) runs on every token before the classifier.
            let x = match &model.pooler {
                Some(p) if p.prediction_head => g.pooler(&dense_name, &x, p, eps)?,
                _ => x,
            };
            (
                g.linear("classifier", &x, &model.classifier, None)?,
                "logits",
            )
        }
        TaskKind::Embedding => {
            let features = g.features(&x, &maskf, model.pooling);
            // x / max(‖x‖₂, 1e-12), as torch.nn.functional.normalize.
            let axis1 = g.int_tensor("axis_last", &[1], &[1]);
            let sq = g.op("Mul", &[&features, &features], vec![]);
            let sum = g.op("ReduceSum", &[&sq, &axis1], vec![attr_int("keepdims", 1)]);
            let norm = g.op("Sqrt", &[&sum], vec![]);
            let floor = g.scalar("norm_floor", 1e-12);
            let norm = g.op("Max", &[&norm, &floor], vec![]);
            (
                g.op("Div", &[&features, &norm], vec![]),
                "sentence_embedding",
            )
        }
        _ => {
            // As [`SequenceClassifier::pool_features`].
            let features = g.features(&x, &maskf, model.pooling);
            let pooled = match (model.pooling, &model.pooler) {
                (Pooling::Cls, Some(p)) => g.pooler(&dense_name, &features, p, eps)?,
                (Pooling::Mean, Some(p)) if p.prediction_head => {
                    g.pooler(&dense_name, &features, p, eps)?
                }
                _ => features,
            };
            (
                g.linear(head_out, &pooled, &model.classifier, None)?,
                "logits",
            )
        }
    };
    // Name the graph output.
    g.nodes.push(pb::NodeProto {
        input: vec![out_value],
        output: vec![out_name.into()],
        name: out_name.into(),
        op_type: "Identity".into(),
        attribute: vec![],
        domain: String::new(),
    });
    let classes = model.num_classes().to_string();
    let hidden = config.hidden_size.to_string();
    let output_dims: Vec<&str> = match kind {
        TaskKind::TokenClassification => vec!["batch", "sequence", &classes],
        TaskKind::Embedding => vec!["batch", &hidden],
        _ => vec!["batch", &classes],
    };

    let graph = pb::GraphProto {
        node: g.nodes,
        name: "tunekit_sequence_classifier".into(),
        initializer: g.initializers,
        doc_string: format!(
            "{} encoder + {kind:?} head exported by tunekit",
            names.model_type
        ),
        input: vec![
            input("input_ids", pb::INT64, &["batch", "sequence"]),
            input("attention_mask", pb::INT64, &["batch", "sequence"]),
            input("token_type_ids", pb::INT64, &["batch", "sequence"]),
        ],
        output: vec![input(out_name, pb::FLOAT, &output_dims)],
    };
    let model = pb::ModelProto {
        ir_version: IR_VERSION,
        producer_name: "tunekit".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: String::new(),
        graph: Some(graph),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
    };
    let bytes = model.encode_to_vec();
    if bytes.len() > i32::MAX as usize {
        return Err(Error::Model(format!(
            "the ONNX graph is {} bytes, over protobuf's 2 GiB limit (external data is not supported)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_protobuf() {
        let m = pb::ModelProto {
            ir_version: IR_VERSION,
            producer_name: "tunekit".into(),
            graph: Some(pb::GraphProto {
                name: "g".into(),
                input: vec![input("input_ids", pb::INT64, &["batch", "7"])],
                ..Default::default()
            }),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            ..Default::default()
        };
        let bytes = m.encode_to_vec();
        let back = pb::ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, m);
        let graph = back.graph.unwrap();
        let dims = &graph.input[0]
            .r#type
            .as_ref()
            .unwrap()
            .tensor_type
            .as_ref()
            .unwrap()
            .shape
            .as_ref()
            .unwrap()
            .dim;
        assert_eq!(dims[0].dim_param.as_deref(), Some("batch"));
        assert_eq!(dims[1].dim_value, Some(7));
    }
}
