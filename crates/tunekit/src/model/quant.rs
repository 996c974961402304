//! Post-training int8 quantisation of the encoder's linear layers: which tensors are
//! quantised, how they are stored, and attaching them to a loaded model. The int8 layer and its
//! product (scheme, AMX/VNNI/portable kernels) are [`tunekit_kernels::int8`]'s. Embeddings,
//! LayerNorm, attention softmax/matmuls, the pooler and the classifier stay f32.
//!
//! Storage: `model.safetensors` keeps every tensor's HF name; quantised weights are `I8`
//! `[out, in]` with an F32 `<name>_scale` `[out]` beside them. The word-embedding table (most
//! of a small model's bytes) is stored the same way, one scale per token, and dequantised when
//! loaded: it is looked up, not multiplied, so it costs no speed and saves the disk. [`super::weights::WeightFile`]
//! dequantises such pairs on read, so any tunekit loader gets the (dequantised) f32 model, and
//! [`attach`] adds the int8 weights that inference then uses.

use std::path::Path;
use std::sync::Arc;

pub use tunekit_kernels::int8::QuantLinear;

use super::SequenceClassifier;
use super::backbone::{Backbone, LinearRole};
use super::family::Names;
use super::weights::{HfTensor, RawTensor, to_vec, transpose};
use crate::error::{Error, Result};

/// HF name (in a task model) of a family's vocabulary table, stored int8 by
/// [`int8_tensors`].
pub fn word_embeddings_name(names: &Names) -> String {
    format!("{}{}.weight", names.prefix, names.word_embeddings)
}

/// The int8 weights of every encoder layer, attached to a model for inference.
#[derive(Debug, Clone)]
pub struct Int8Encoder {
    /// Per layer: query, key, value, attention output, intermediate, output.
    pub layers: Vec<[QuantLinear; 6]>,
}

/// HF names (without the family prefix) of a layer's six linear layers, in [`Int8Encoder`]
/// order.
pub fn layer_linears(names: &Names, i: usize) -> [String; 6] {
    LinearRole::ALL.map(|role| names.linear(i, role))
}

/// Layer `i`'s six linear layers, in [`Int8Encoder`] order.
fn linears(backbone: &dyn Backbone, i: usize) -> [&burn::nn::Linear; 6] {
    LinearRole::ALL.map(|role| backbone.linear(i, role))
}

/// Bias of a linear layer (zeros when it has none).
fn bias_of(l: &burn::nn::Linear, d_out: usize) -> Result<Vec<f32>> {
    match &l.bias {
        Some(b) => to_vec(b.val()),
        None => Ok(vec![0.0; d_out]),
    }
}

/// Quantise the encoder's linear layers of `model` (which must not carry LoRA adapters:
/// merge them first); returns their int8 weights and the largest weight error relative to
/// its output channel's largest |w| (at most half a quantisation step, 1/254).
pub fn quantize_encoder(model: &SequenceClassifier) -> Result<(Int8Encoder, f64)> {
    if let Some(why) = model.encoder.unsupported(super::backbone::Feature::Int8) {
        return Err(Error::Model(why));
    }
    let mut layers = Vec::new();
    let mut worst = 0.0f64;
    for i in 0..model.encoder.num_layers() {
        let lin = linears(&model.encoder, i);
        let mut q = Vec::with_capacity(6);
        for l in lin {
            if l.weight.adapter().is_some() {
                return Err(Error::Model(
                    "quantize a merged model: LoRA adapters are still attached (tunekit merge)"
                        .into(),
                ));
            }
            let [d_in, d_out] = l.weight.val().dims();
            let w = transpose(&to_vec(l.weight.val())?, d_in, d_out);
            let b = bias_of(l, d_out)?;
            let ql = QuantLinear::quantize(&w, b, d_in, d_out);
            for (i, d) in ql.dequantized().iter().enumerate() {
                let amax = f64::from(ql.scale[i / d_in]) * 127.0;
                if amax > 0.0 {
                    worst = worst.max(f64::from((d - w[i]).abs()) / amax);
                }
            }
            q.push(ql);
        }
        let arr: [QuantLinear; 6] = q
            .try_into()
            .map_err(|_| Error::Engine("six linear layers per encoder layer".into()))?;
        layers.push(arr);
    }
    Ok((Int8Encoder { layers }, worst))
}

/// Replace the encoder's linear weights of HF tensors (family-prefixed names), and the word
/// embeddings, by their int8 form: `I8` weight + F32 `<name>_scale`. Returns the tensors to
/// write, as raw bytes with dtypes.
pub fn int8_tensors(tensors: Vec<HfTensor>, int8: &Int8Encoder, names: &Names) -> Vec<RawTensor> {
    let mut quantized = std::collections::BTreeMap::new();
    for (i, layer) in int8.layers.iter().enumerate() {
        for (name, q) in layer_linears(names, i).iter().zip(layer) {
            quantized.insert(format!("{}{name}.weight", names.prefix), q);
        }
    }
    let words = word_embeddings_name(names);
    let mut out = Vec::new();
    for (name, shape, values) in tensors {
        if name == words && shape.len() == 2 {
            // The vocabulary table is most of the file; it is a lookup, not a product, so it
            // is stored int8 (per-row scales) and dequantised when loaded.
            let (rows, cols) = (shape[0], shape[1]);
            let q = QuantLinear::quantize_rows(&values, rows, cols);
            out.push((
                name.clone(),
                safetensors::Dtype::I8,
                shape,
                q.0.iter().map(|&v| v as u8).collect(),
            ));
            out.push((
                format!("{name}_scale"),
                safetensors::Dtype::F32,
                vec![rows],
                q.1.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
            continue;
        }
        match quantized.get(&name) {
            Some(q) => {
                out.push((
                    name.clone(),
                    safetensors::Dtype::I8,
                    shape,
                    q.weight.iter().map(|&v| v as u8).collect(),
                ));
                out.push((
                    format!("{name}_scale"),
                    safetensors::Dtype::F32,
                    vec![q.out_features],
                    q.scale.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ));
            }
            None => out.push((
                name,
                safetensors::Dtype::F32,
                shape,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )),
        }
    }
    out
}

/// Whether tensor `name` is `I8` in the safetensors header of `path` (8-byte length, then JSON),
/// read without the tensor data.
fn header_has_i8(path: &Path, name: &str) -> Result<bool> {
    use std::io::Read;
    let bad = |message: String| Error::Weights {
        file: path.to_path_buf(),
        tensor: "<header>".into(),
        message,
    };
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| Error::io(path, e))?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Err(bad(format!("header of {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    Ok(json[name]["dtype"] == "I8")
}

/// If the weights file at `path` holds int8 encoder weights, attach them to `model` so that
/// inference runs the int8 product; otherwise return `model` unchanged.
pub fn attach(mut model: SequenceClassifier, path: &Path) -> Result<SequenceClassifier> {
    let prefix = model.encoder.prefix();
    let name = |n: &str| format!("{prefix}{n}.weight");
    let first = name(&model.encoder.linear_name(0, LinearRole::ALL[0]));
    // Every model load passes here: decide from the file's header alone, so an f32 model's
    // weights (already read by the loader) are not read a second time. Only `tunekit
    // quantize` writes int8 weights, always as one safetensors file.
    if path.extension().is_none_or(|e| e != "safetensors") || !header_has_i8(path, &first)? {
        return Ok(model);
    }
    if let Some(why) = model.encoder.unsupported(super::backbone::Feature::Int8) {
        return Err(Error::Model(format!("{}: {why}", path.display())));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Weights {
        file: path.to_path_buf(),
        tensor: "<header>".into(),
        message: e.to_string(),
    })?;
    let mut layers = Vec::new();
    for i in 0..model.encoder.num_layers() {
        let mut q = Vec::with_capacity(6);
        for role in LinearRole::ALL {
            let l = model.encoder.linear(i, role);
            let wname = name(&model.encoder.linear_name(i, role));
            let weights = st.tensor(&wname).map_err(|_| Error::Weights {
                file: path.to_path_buf(),
                tensor: wname.clone(),
                message: "missing from an int8 model".into(),
            })?;
            let scales = st
                .tensor(&format!("{wname}_scale"))
                .map_err(|_| Error::Weights {
                    file: path.to_path_buf(),
                    tensor: format!("{wname}_scale"),
                    message: "missing: an I8 weight needs its per-channel scales".into(),
                })?;
            let [d_in, d_out] = l.weight.val().dims();
            if weights.dtype() != safetensors::Dtype::I8 || weights.shape() != [d_out, d_in] {
                return Err(Error::Weights {
                    file: path.to_path_buf(),
                    tensor: wname,
                    message: format!(
                        "expected I8 {:?}, found {:?} {:?}",
                        [d_out, d_in],
                        weights.dtype(),
                        weights.shape()
                    ),
                });
            }
            let w: Vec<i8> = weights.data().iter().map(|&b| b as i8).collect();
            let s: Vec<f32> = scales
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let b = bias_of(l, d_out)?;
            q.push(QuantLinear::from_int8(w, s, b, d_in, d_out));
        }
        let arr: [QuantLinear; 6] = q
            .try_into()
            .map_err(|_| Error::Engine("six linear layers per encoder layer".into()))?;
        layers.push(arr);
    }
    model
        .encoder
        .set_int8(Some(Arc::new(Int8Encoder { layers })));
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_int8_vocabulary_name_is_the_familys_word_embedding_weight() {
        use crate::model::Family;
        assert_eq!(
            word_embeddings_name(Family::Bert.names()),
            "bert.embeddings.word_embeddings.weight"
        );
        assert_eq!(
            word_embeddings_name(Family::DistilBert.names()),
            "distilbert.embeddings.word_embeddings.weight"
        );
        assert_eq!(
            layer_linears(Family::Bert.names(), 2)[3],
            "encoder.layer.2.attention.output.dense"
        );
        assert_eq!(
            layer_linears(Family::DistilBert.names(), 1)[5],
            "transformer.layer.1.ffn.lin2"
        );
    }
}
