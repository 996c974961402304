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
//! Importance (magnitude, no data needed): head h of a layer scores ‖W_v[:, h]‖·‖W_o[h, :]‖
//! (what it reads times what it writes back into the residual stream); FFN neuron j scores
//! ‖W_in[:, j]‖·‖W_out[j, :]‖. A unit whose output weights are zero scores 0 and is removed
//! first, which makes pruning it exact (the test relies on that).

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use super::weights::to_vec;
use super::{BertConfig, SequenceClassifier};
use crate::error::{Error, Result};

/// What to prune.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneOptions {
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
    device: &Device,
) -> Result<(SequenceClassifier, BertConfig, PruneReport)> {
    fraction("heads", opts.heads)?;
    fraction("ffn", opts.ffn)?;
    if let Some(s) = opts.sparsity {
        fraction("sparsity", s)?;
    }
    let before = model.num_params();
    let mut config = config.clone();
    let head_dim = config.head_dim();
    let mut heads_removed = BTreeMap::new();
    let inter_before = config.intermediate_size;
    let inter_keep = inter_before - (opts.ffn * inter_before as f64).round() as usize;
    for (i, layer) in model.bert.layers.iter_mut().enumerate() {
        // Heads: scores over the heads still present, mapped back to original indices.
        let heads = layer.attention.num_heads;
        let remove = ((opts.heads * heads as f64).round() as usize).min(heads - 1);
        if remove > 0 {
            let (wv, _, vin, vout) = read_linear(&layer.attention.value)?;
            let (wo, _, oin, oout) = read_linear(&layer.attention.output)?;
            let v_cols = col_norms(&wv, vin, vout);
            let o_rows = row_norms(&wo, oin, oout);
            let scores: Vec<f64> = (0..heads)
                .map(|h| {
                    let r = h * head_dim..(h + 1) * head_dim;
                    v_cols[r.clone()].iter().sum::<f64>().sqrt()
                        * o_rows[r].iter().sum::<f64>().sqrt()
                })
                .collect();
            let kept = top(&scores, heads - remove);
            let cols: Vec<usize> = kept
                .iter()
                .flat_map(|&h| h * head_dim..(h + 1) * head_dim)
                .collect();
            let a = &mut layer.attention;
            a.query = keep_outputs(&a.query, &cols, device)?;
            a.key = keep_outputs(&a.key, &cols, device)?;
            a.value = keep_outputs(&a.value, &cols, device)?;
            a.output = keep_inputs(&a.output, &cols, device)?;
            a.num_heads = kept.len();
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
            let (wi, _, iin, iout) = read_linear(&layer.intermediate)?;
            let (wo, _, oin, oout) = read_linear(&layer.output)?;
            let a = col_norms(&wi, iin, iout);
            let b = row_norms(&wo, oin, oout);
            let scores: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (x * y).sqrt()).collect();
            let kept = top(&scores, inter_keep);
            layer.intermediate = keep_outputs(&layer.intermediate, &kept, device)?;
            layer.output = keep_inputs(&layer.output, &kept, device)?;
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
            parameters_before: before,
            parameters_after: after,
            heads_removed,
            intermediate_size: (inter_before, inter_keep),
            linear_sparsity,
        },
    ))
}

fn linears_mut(model: &mut SequenceClassifier) -> Vec<&mut Linear> {
    let mut out = Vec::new();
    for l in &mut model.bert.layers {
        let a = &mut l.attention;
        out.push(&mut a.query);
        out.push(&mut a.key);
        out.push(&mut a.value);
        out.push(&mut a.output);
        out.push(&mut l.intermediate);
        out.push(&mut l.output);
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
    let mut mats: Vec<(Vec<f32>, Vec<f32>, usize, usize)> = Vec::new();
    for l in linears_mut(model) {
        mats.push(read_linear(l)?);
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
    for (l, (w, b, d_in, d_out)) in linears_mut(model).into_iter().zip(mats) {
        *l = make_linear(w, b, d_in, d_out, device);
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
    for l in &model.bert.layers {
        let a = &l.attention;
        for lin in [
            &a.query,
            &a.key,
            &a.value,
            &a.output,
            &l.intermediate,
            &l.output,
        ] {
            count(lin.weight.val())?;
        }
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
}
