//! Pruning a fine-tuned classifier (`tunekit prune`):
//!
//! - **structured**: remove whole attention heads and feed-forward neurons, the same number in
//!   every layer, chosen by a magnitude importance score; the result is a smaller dense model
//!   with a valid config (`intermediate_size` lowered, removed heads in HF's `pruned_heads`, so
//!   `transformers` loads it too) that is really faster;
//! - **unstructured**: zero the smallest-magnitude weights of the encoder's linear layers to a
//!   target sparsity, over all of them at once (global) or per layer; same shapes and speed on
//!   a dense backend, the sparsity is what a sparse runtime or compressor can use.
//!
//! Importance, one of:
//! - **magnitude** (no data needed): head h of a layer scores ‖W_v[:, h]‖·‖W_o[h, :]‖ (what it
//!   reads times what it writes back into the residual stream); FFN neuron j scores
//!   ‖W_in[:, j]‖·‖W_out[j, :]‖;
//! - **first-order Taylor** on a labelled calibration set ([`taylor_scores`]; Michel et al.
//!   2019, Molchanov et al. 2019): the loss change of removing a unit, to first order, is the
//!   gradient of the loss with respect to a gate ξ on the unit's output. For head h that gate's
//!   gradient is Σ_{i∈h, j} W_o[i, j]·∂L/∂W_o[i, j] (its rows of the attention output
//!   projection), for neuron j it is Σ_k W_out[j, k]·∂L/∂W_out[j, k]; a unit scores the sum
//!   over calibration batches of the absolute value.
//!
//! Under either score a unit whose output weights are zero scores 0 and is removed first,
//! which makes pruning it exact (the test relies on that).

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use super::backbone::{Backbone, LinearRole};
use super::weights::to_vec;
use super::{BertConfig, SequenceClassifier};
use crate::error::{Error, Result};

/// How structured pruning ranks heads and neurons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Importance {
    /// Weight norms (no data).
    #[default]
    Magnitude,
    /// First-order Taylor expansion of the loss on calibration data ([`taylor_scores`]).
    Taylor,
}

/// Taylor importance of every head and FFN neuron, by layer (current local indices).
#[derive(Debug, Clone, Default)]
pub struct TaylorScores {
    /// Per layer, per head.
    pub heads: Vec<Vec<f64>>,
    /// Per layer, per feed-forward neuron.
    pub neurons: Vec<Vec<f64>>,
    /// Calibration examples used.
    pub examples: usize,
}

/// First-order Taylor importance of `model`'s heads and FFN neurons over labelled batches
/// (see the module docs). `model` must be on an autodiff device, dropout off; the batches are
/// `(inputs, class ids)` on that device.
pub fn taylor_scores(
    model: &SequenceClassifier,
    batches: &[(super::EncodedBatch, Vec<usize>)],
) -> Result<TaylorScores> {
    refuse(model, super::backbone::Feature::StructuredPruning)?;
    let bert = &model.encoder;
    let layers = bert.num_layers();
    let mut out = TaylorScores {
        heads: (0..layers).map(|i| vec![0.0; bert.num_heads(i)]).collect(),
        neurons: (0..layers)
            .map(|i| vec![0.0; bert.linear(i, LinearRole::Intermediate).weight.dims()[1]])
            .collect(),
        examples: 0,
    };
    // Σ_k W[r, k]·G[r, k] for every input row r of a linear layer ([in, out] layout).
    let row_gate = |l: &Linear, grads: &burn::optim::GradientsParams| -> Result<Vec<f64>> {
        let [d_in, d_out] = l.weight.dims();
        let g = grads
            .get::<2>(l.weight.id)
            .ok_or_else(|| Error::Engine("no gradient for a pruned layer's weight".into()))?;
        let (w, g) = (to_vec(l.weight.val())?, to_vec(g)?);
        Ok((0..d_in)
            .map(|r| {
                (0..d_out)
                    .map(|c| f64::from(w[r * d_out + c]) * f64::from(g[r * d_out + c]))
                    .sum()
            })
            .collect())
    };
    for (batch, labels) in batches {
        let device = batch.attention_mask.device();
        let logits = model.forward(batch);
        let loss =
            crate::train::cross_entropy_sum(logits, crate::batch::label_tensor(labels, &device));
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), model);
        for i in 0..layers {
            let heads = bert.num_heads(i);
            let rows = row_gate(bert.linear(i, LinearRole::AttentionOutput), &grads)?;
            let hd = rows.len() / heads.max(1);
            for (h, score) in out.heads[i].iter_mut().enumerate() {
                *score += rows[h * hd..(h + 1) * hd].iter().sum::<f64>().abs();
            }
            let rows = row_gate(bert.linear(i, LinearRole::Output), &grads)?;
            for (score, r) in out.neurons[i].iter_mut().zip(rows) {
                *score += r.abs();
            }
        }
        out.examples += labels.len();
    }
    Ok(out)
}

/// What to prune.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneOptions {
    /// How heads and neurons are ranked (Taylor needs calibration scores).
    pub importance: Importance,
    /// Share of attention heads to remove in every layer (rounded to whole heads; at least one
    /// head stays).
    pub heads: f64,
    /// Share of feed-forward neurons to remove in every layer.
    pub ffn: f64,
    /// Target share of zero weights in the encoder's linear layers (unstructured).
    pub sparsity: Option<f64>,
    /// Unstructured pruning per weight matrix instead of one global threshold.
    pub per_layer: bool,
}

/// What pruning did.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// How heads and neurons were ranked.
    pub importance: Importance,
    /// Calibration examples behind Taylor scores (0 for magnitude).
    pub calibration_examples: usize,
    /// Parameters before.
    pub parameters_before: usize,
    /// Parameters after (zeroed weights still count).
    pub parameters_after: usize,
    /// Heads removed in this pass, by layer (original head indices).
    pub heads_removed: BTreeMap<usize, Vec<usize>>,
    /// Feed-forward width before and after.
    pub intermediate_size: (usize, usize),
    /// Share of zero weights in the encoder's linear layers after pruning.
    pub linear_sparsity: f64,
}

fn read_linear(l: &Linear) -> Result<(Vec<f32>, Vec<f32>, usize, usize)> {
    let [d_in, d_out] = l.weight.dims();
    let w = to_vec(l.weight.val())?;
    let b = match &l.bias {
        Some(b) => to_vec(b.val())?,
        None => vec![0.0; d_out],
    };
    Ok((w, b, d_in, d_out))
}

fn make_linear(w: Vec<f32>, b: Vec<f32>, d_in: usize, d_out: usize, device: &Device) -> Linear {
    Linear {
        weight: Param::from_data(TensorData::new(w, [d_in, d_out]), device),
        bias: Some(Param::from_data(TensorData::new(b, [d_out]), device)),
    }
}

/// Keep output columns `cols` of a linear layer ([in, out] row-major).
fn keep_outputs(l: &Linear, cols: &[usize], device: &Device) -> Result<Linear> {
    let (w, b, d_in, d_out) = read_linear(l)?;
    let mut nw = Vec::with_capacity(d_in * cols.len());
    for r in 0..d_in {
        nw.extend(cols.iter().map(|&c| w[r * d_out + c]));
    }
    let nb = cols.iter().map(|&c| b[c]).collect();
    Ok(make_linear(nw, nb, d_in, cols.len(), device))
}

/// Keep input rows `rows` of a linear layer.
fn keep_inputs(l: &Linear, rows: &[usize], device: &Device) -> Result<Linear> {
    let (w, b, _, d_out) = read_linear(l)?;
    let mut nw = Vec::with_capacity(rows.len() * d_out);
    for &r in rows {
        nw.extend_from_slice(&w[r * d_out..(r + 1) * d_out]);
    }
    Ok(make_linear(nw, b, rows.len(), d_out, device))
}

fn col_norms(w: &[f32], d_in: usize, d_out: usize) -> Vec<f64> {
    let mut n = vec![0.0f64; d_out];
    for r in 0..d_in {
        for (c, v) in w[r * d_out..(r + 1) * d_out].iter().enumerate() {
            n[c] += f64::from(*v) * f64::from(*v);
        }
    }
    n
}

fn row_norms(w: &[f32], d_in: usize, d_out: usize) -> Vec<f64> {
    (0..d_in)
        .map(|r| {
            w[r * d_out..(r + 1) * d_out]
                .iter()
                .map(|v| f64::from(*v) * f64::from(*v))
                .sum()
        })
        .collect()
}

/// Indices of the `keep` highest scores, in increasing index order (ties: lower index kept).
fn top(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = order.into_iter().take(keep).collect();
    kept.sort_unstable();
    kept
}

fn fraction(name: &str, v: f64) -> Result<()> {
    if (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "--{name} must be in [0, 1), got {v}"
        )))
    }
}

/// Prune `model` (inference mode, adapters merged) per `opts`; returns the pruned model, its
/// config and what was removed.
pub fn prune(
    mut model: SequenceClassifier,
    config: &BertConfig,
    opts: &PruneOptions,
    taylor: Option<&TaylorScores>,
    device: &Device,
) -> Result<(SequenceClassifier, BertConfig, PruneReport)> {
    if opts.importance == Importance::Taylor && taylor.is_none() {
        return Err(Error::Config(
            "Taylor importance needs calibration data (--calibration FILE)".into(),
        ));
    }
    fraction("heads", opts.heads)?;
    if opts.heads > 0.0 && matches!(model.encoder, super::Encoder::DebertaV2(_)) {
        // transformers' DebertaV2Model has no `pruned_heads`: an export with fewer heads would
        // not load there, and the relative-position projections would need slicing too.
        return Err(Error::Config(
            "head pruning is not supported for deberta-v2 models (prune feed-forward neurons with heads = 0)".into(),
        ));
    }
    fraction("ffn", opts.ffn)?;
    let names = model.encoder.names();
    if opts.heads > 0.0 && names.relative_attention_bias.is_some() {
        return Err(Error::Config(format!(
            "{}: attention heads cannot be pruned: its relative position bias ({}) is shared by every layer with one column per head, and transformers cannot load a model with some heads removed; prune feed-forward neurons (--ffn) or weights (--sparsity) instead",
            names.model_type,
            names.relative_attention_bias.unwrap_or_default()
        )));
    }
    if let Some(s) = opts.sparsity {
        fraction("sparsity", s)?;
    }
    if opts.heads > 0.0 || opts.ffn > 0.0 {
        refuse(&model, super::backbone::Feature::StructuredPruning)?;
    }
    let before = model.num_params();
    let mut config = config.clone();
    let head_dim = config.head_dim();
    let mut heads_removed = BTreeMap::new();
    let inter_before = config.intermediate_size;
    // At least one neuron stays (as one head does): a zero-width feed-forward layer is not a
    // model config.json can describe (intermediate_size must be positive).
    let inter_keep = inter_before
        - ((opts.ffn * inter_before as f64).round() as usize).min(inter_before.saturating_sub(1));
    let bert = &mut model.encoder;
    for i in 0..bert.num_layers() {
        // Heads: scores over the heads still present, mapped back to original indices.
        let heads = bert.num_heads(i);
        let remove = ((opts.heads * heads as f64).round() as usize).min(heads - 1);
        if remove > 0 {
            let scores: Vec<f64> = match taylor {
                Some(t) => t.heads[i].clone(),
                None => {
                    let (wv, _, vin, vout) = read_linear(bert.linear(i, LinearRole::Value))?;
                    let (wo, _, oin, oout) =
                        read_linear(bert.linear(i, LinearRole::AttentionOutput))?;
                    let v_cols = col_norms(&wv, vin, vout);
                    let o_rows = row_norms(&wo, oin, oout);
                    (0..heads)
                        .map(|h| {
                            let r = h * head_dim..(h + 1) * head_dim;
                            v_cols[r.clone()].iter().sum::<f64>().sqrt()
                                * o_rows[r].iter().sum::<f64>().sqrt()
                        })
                        .collect()
                }
            };
            let kept = top(&scores, heads - remove);
            let cols: Vec<usize> = kept
                .iter()
                .flat_map(|&h| h * head_dim..(h + 1) * head_dim)
                .collect();
            for role in [LinearRole::Query, LinearRole::Key, LinearRole::Value] {
                let l = bert.linear_mut(i, role);
                *l = keep_outputs(l, &cols, device)?;
            }
            let l = bert.linear_mut(i, LinearRole::AttentionOutput);
            *l = keep_inputs(l, &cols, device)?;
            bert.set_num_heads(i, kept.len());
            // Local head index → original index (earlier passes may have removed some).
            let entry = config.pruned_heads.entry(i.to_string()).or_default();
            let original: Vec<usize> = (0..config.num_attention_heads)
                .filter(|h| !entry.contains(h))
                .collect();
            let removed: Vec<usize> = (0..heads)
                .filter(|h| !kept.contains(h))
                .map(|h| original[h])
                .collect();
            entry.extend(&removed);
            entry.sort_unstable();
            heads_removed.insert(i, removed);
        }
        // Feed-forward neurons.
        if inter_keep < inter_before {
            let scores: Vec<f64> = match taylor {
                Some(t) => t.neurons[i].clone(),
                None => {
                    let (wi, _, iin, iout) = read_linear(bert.linear(i, LinearRole::Intermediate))?;
                    let (wo, _, oin, oout) = read_linear(bert.linear(i, LinearRole::Output))?;
                    let a = col_norms(&wi, iin, iout);
                    let b = row_norms(&wo, oin, oout);
                    a.iter().zip(&b).map(|(x, y)| (x * y).sqrt()).collect()
                }
            };
            let kept = top(&scores, inter_keep);
            let l = bert.linear_mut(i, LinearRole::Intermediate);
            *l = keep_outputs(l, &kept, device)?;
            let l = bert.linear_mut(i, LinearRole::Output);
            *l = keep_inputs(l, &kept, device)?;
        }
    }
    config.intermediate_size = inter_keep;
    if let Some(s) = opts.sparsity {
        magnitude(&mut model, s, opts.per_layer, device)?;
    }
    let linear_sparsity = sparsity(&model)?;
    let after = model.num_params();
    Ok((
        model,
        config,
        PruneReport {
            importance: opts.importance,
            calibration_examples: taylor.map_or(0, |t| t.examples),
            parameters_before: before,
            parameters_after: after,
            heads_removed,
            intermediate_size: (inter_before, inter_keep),
            linear_sparsity,
        },
    ))
}

/// `Err` naming the architecture when the model's encoder refuses `feature`.
fn refuse(model: &SequenceClassifier, feature: super::backbone::Feature) -> Result<()> {
    match model.encoder.unsupported(feature) {
        Some(why) => Err(Error::Model(why)),
        None => Ok(()),
    }
}

/// Every (layer, role) of the encoder's linear modules, in [`LinearRole::ALL`] order; a module
/// serving several roles (ModernBERT's fused `Wqkv`) once, at its first role.
fn linear_slots(backbone: &dyn Backbone) -> Vec<(usize, LinearRole)> {
    let mut out: Vec<(usize, LinearRole)> = Vec::new();
    for i in 0..backbone.num_layers() {
        let mut seen: Vec<String> = Vec::new();
        for r in LinearRole::ALL {
            let name = backbone.linear_name(i, r);
            if !seen.contains(&name) {
                seen.push(name);
                out.push((i, r));
            }
        }
    }
    out
}

/// Zero the smallest |w| of the encoder's linear weights (not biases, embeddings, LayerNorm or
/// the head) until `target` of them are zero.
fn magnitude(
    model: &mut SequenceClassifier,
    target: f64,
    per_layer: bool,
    device: &Device,
) -> Result<()> {
    let slots = linear_slots(&model.encoder);
    let mut mats: Vec<(Vec<f32>, Vec<f32>, usize, usize)> = Vec::new();
    for &(i, role) in &slots {
        mats.push(read_linear(model.encoder.linear(i, role))?);
    }
    let zero_smallest = |values: &mut [&mut f32], k: usize| {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()));
        for &i in order.iter().take(k) {
            *values[i] = 0.0;
        }
    };
    if per_layer {
        for (w, _, _, _) in &mut mats {
            let k = (target * w.len() as f64).round() as usize;
            let mut refs: Vec<&mut f32> = w.iter_mut().collect();
            zero_smallest(&mut refs, k);
        }
    } else {
        let total: usize = mats.iter().map(|m| m.0.len()).sum();
        let k = (target * total as f64).round() as usize;
        let mut refs: Vec<&mut f32> = mats.iter_mut().flat_map(|m| m.0.iter_mut()).collect();
        zero_smallest(&mut refs, k);
    }
    for (&(i, role), (w, b, d_in, d_out)) in slots.iter().zip(mats) {
        *model.encoder.linear_mut(i, role) = make_linear(w, b, d_in, d_out, device);
    }
    Ok(())
}

/// Share of exact zeros in the encoder's linear weights.
pub fn sparsity(model: &SequenceClassifier) -> Result<f64> {
    let (mut zeros, mut total) = (0usize, 0usize);
    let mut count = |t: Tensor<2>| -> Result<()> {
        let v = to_vec(t)?;
        zeros += v.iter().filter(|x| **x == 0.0).count();
        total += v.len();
        Ok(())
    };
    for (i, role) in linear_slots(&model.encoder) {
        count(model.encoder.linear(i, role).weight.val())?;
    }
    Ok(zeros as f64 / total.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_keeps_the_highest_scores_in_index_order() {
        assert_eq!(top(&[0.5, 3.0, 0.0, 2.0], 2), vec![1, 3]);
        assert_eq!(top(&[1.0, 1.0, 1.0], 2), vec![0, 1]);
    }

    #[test]
    fn slicing_keeps_the_chosen_rows_and_columns() {
        let device = Device::flex();
        // [in = 2, out = 3]: rows (1, 2, 3), (4, 5, 6).
        let l = make_linear(
            vec![1., 2., 3., 4., 5., 6.],
            vec![7., 8., 9.],
            2,
            3,
            &device,
        );
        let (w, b, i, o) = read_linear(&keep_outputs(&l, &[0, 2], &device).unwrap()).unwrap();
        assert_eq!((w, b, i, o), (vec![1., 3., 4., 6.], vec![7., 9.], 2, 2));
        let (w, b, i, o) = read_linear(&keep_inputs(&l, &[1], &device).unwrap()).unwrap();
        assert_eq!((w, b, i, o), (vec![4., 5., 6.], vec![7., 8., 9.], 1, 3));
        assert_eq!(col_norms(&[1., 2., 3., 4.], 2, 2), vec![10.0, 20.0]);
        assert_eq!(row_norms(&[1., 2., 3., 4.], 2, 2), vec![5.0, 25.0]);
    }

    #[test]
    fn taylor_scores_equal_the_finite_difference_loss_slope_of_a_unit_gate() {
        use crate::model::weights::{ClassifierSpec, DropoutOverride, load_classifier};
        let dir = tempfile::tempdir().unwrap();
        let cfg = serde_json::json!({
            "model_type": "bert", "vocab_size": 30522, "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
            "hidden_act": "gelu", "max_position_embeddings": 64, "type_vocab_size": 2
        });
        std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
        let config = BertConfig::from_file(&dir.path().join("config.json")).unwrap();
        let weights = dir.path().join("model.safetensors");
        crate::model::weights::write_random_encoder(&config, &weights, 3).unwrap();
        let spec = ClassifierSpec {
            head: Default::default(),
            num_labels: 2,
            pooling: crate::model::Pooling::Mean,
            dropout: DropoutOverride {
                hidden: Some(0.0),
                attention: Some(0.0),
            },
            seed: 1,
            require_head: false,
        };
        let tokens: Vec<crate::tokenize::Tokens> = (0..6u32)
            .map(|i| crate::tokenize::Tokens {
                ids: std::iter::once(101)
                    .chain((0..3 + i).map(|j| 2000 + 37 * i + j))
                    .chain(std::iter::once(102))
                    .collect(),
                type_ids: vec![0; 5 + i as usize],
                truncated: false,
            })
            .collect();
        let labels = vec![0, 1, 1, 0, 1, 0];
        let refs: Vec<&crate::tokenize::Tokens> = tokens.iter().collect();
        // A random head barely moves the loss; a 50× larger one makes the slopes measurable
        // by finite differences in f32.
        let boost = |mut m: SequenceClassifier, device: &Device| {
            let (w, b, i, o) = read_linear(&m.classifier).unwrap();
            m.classifier = make_linear(w.iter().map(|v| v * 50.0).collect(), b, i, o, device);
            m
        };
        let ad = Device::flex().autodiff();
        let model = boost(
            load_classifier(&weights, &config, &spec, &ad).unwrap().0,
            &ad,
        );
        let batch = crate::batch::collate(&refs, 0, &ad);
        let t = taylor_scores(&model, &[(batch, labels.clone())]).unwrap();
        assert_eq!(t.examples, 6);

        // L(ξ) with the unit's output rows scaled by ξ, on the plain device.
        let plain = Device::flex();
        let loss = |layer: usize, head: Option<usize>, neuron: Option<usize>, xi: f32| -> f64 {
            let mut m = boost(
                load_classifier(&weights, &config, &spec, &plain).unwrap().0,
                &plain,
            );
            let l = &mut m.encoder.as_bert_mut().unwrap().layers[layer];
            let target = if head.is_some() {
                &mut l.attention.output
            } else {
                &mut l.output
            };
            let (mut w, b, d_in, d_out) = read_linear(target).unwrap();
            let rows = match (head, neuron) {
                (Some(h), _) => h * 8..(h + 1) * 8,
                (_, Some(j)) => j..j + 1,
                _ => 0..0,
            };
            for r in rows {
                for c in 0..d_out {
                    w[r * d_out + c] *= xi;
                }
            }
            *target = make_linear(w, b, d_in, d_out, &plain);
            let batch = crate::batch::collate(&refs, 0, &plain);
            let l = crate::train::cross_entropy_sum(
                m.forward(&batch),
                crate::batch::label_tensor(&labels, &plain),
            );
            f64::from(to_vec(l).unwrap()[0])
        };
        let eps = 0.1;
        for (layer, head) in [(0, 1), (1, 3)] {
            let fd = (loss(layer, Some(head), None, 1.0 + eps as f32)
                - loss(layer, Some(head), None, 1.0 - eps as f32))
                / (2.0 * eps);
            let got = t.heads[layer][head];
            assert!(fd.abs() > 1e-3, "a measurable slope: {fd}");
            assert!(
                (got - fd.abs()).abs() < 0.05 * fd.abs(),
                "head {layer}/{head}: {got} vs {fd}"
            );
        }
        for (layer, j) in [(0, 5), (1, 40)] {
            let fd = (loss(layer, None, Some(j), 1.0 + eps as f32)
                - loss(layer, None, Some(j), 1.0 - eps as f32))
                / (2.0 * eps);
            let got = t.neurons[layer][j];
            assert!(fd.abs() > 1e-4, "a measurable slope: {fd}");
            assert!(
                (got - fd.abs()).abs() < 0.05 * fd.abs(),
                "neuron {layer}/{j}: {got} vs {fd}"
            );
        }
    }
}
