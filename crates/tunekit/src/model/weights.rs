//! Hugging Face `model.safetensors` ⇄ [`SequenceClassifier`], tensor by tensor.
//!
//! Why not burn-store's `SafetensorsStore` + PyTorch adapter: we need (a) errors that name the
//! file, the HF tensor, and the expected vs found shape, (b) the exact HF
//! `BertForSequenceClassification` names and `[out, in]` layouts on export, and (c) parameter
//! ids that are a pure function of the HF name, so optimizer state saved in a checkpoint
//! re-attaches to a model rebuilt from weights (burn keys optimizer state by `ParamId`). An
//! explicit table of names gives all three in one place.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Param, ParamId};
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use safetensors::{Dtype, SafeTensors};

use super::backbone::{Backbone, LinearRole};
pub use super::bert::names::layer_prefix;
use super::bert::{
    Attention, Bert, Embeddings, Layer, Pooler, Pooling, SequenceClassifier, activation_for,
    dropout, names,
};
use super::config::BertConfig;
use crate::error::{Error, Result};

/// A parameter id derived from the HF tensor name (FNV-1a), stable across processes. The
/// `bert.` prefix is ignored, so a model loaded from a base encoder (no prefix) and from a
/// tunekit checkpoint (HF classifier names, with prefix) gets the same ids.
pub fn param_id(name: &str) -> ParamId {
    let name = name.strip_prefix(names::PREFIX).unwrap_or(name);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ParamId::from(h)
}

fn param_from(name: &str, data: TensorData, device: &Device) -> Param<Tensor<2>> {
    let (_, value, mapper) = Param::<Tensor<2>>::from_data(data, device).consume();
    Param::from_mapped_value(param_id(name), value, mapper)
}

fn param1_from(name: &str, data: TensorData, device: &Device) -> Param<Tensor<1>> {
    let (_, value, mapper) = Param::<Tensor<1>>::from_data(data, device).consume();
    Param::from_mapped_value(param_id(name), value, mapper)
}

/// The tensors of one safetensors file, decoded to f32 on demand, with every access checked.
pub struct WeightFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Name prefix found in the file (`""` or `"bert."`) for encoder tensors.
    prefix: String,
    used: BTreeSet<String>,
}

impl WeightFile {
    /// Open and index a safetensors file; a truncated or corrupt file is an error naming it.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let prefix = {
            let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Weights {
                file: path.to_path_buf(),
                tensor: "<header>".into(),
                message: format!("not a readable safetensors file (truncated or corrupt?): {e}"),
            })?;
            let tensor_names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
            let probe = format!("{}embeddings.", names::PREFIX);
            if tensor_names.iter().any(|n| n.starts_with(&probe)) {
                names::PREFIX.to_string()
            } else {
                String::new()
            }
        };
        Ok(WeightFile {
            path: path.to_path_buf(),
            bytes,
            prefix,
            used: BTreeSet::new(),
        })
    }

    fn tensors(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| Error::Weights {
            file: self.path.clone(),
            tensor: "<header>".into(),
            message: e.to_string(),
        })
    }

    /// Whether the file has `name` (given without the `bert.` prefix for encoder tensors).
    pub fn has(&self, name: &str) -> bool {
        self.tensors()
            .map(|st| st.tensor(name).is_ok())
            .unwrap_or(false)
    }

    /// Full name of an encoder tensor in this file.
    pub fn encoder_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Read tensor `name` as f32, checking it has exactly `shape`.
    pub fn read(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let st = self.tensors()?;
        let view = st.tensor(name).map_err(|_| Error::Weights {
            file: self.path.clone(),
            tensor: name.to_string(),
            message: "missing from the file".into(),
        })?;
        if view.shape() != shape {
            return Err(Error::Weights {
                file: self.path.clone(),
                tensor: name.to_string(),
                message: format!("expected shape {shape:?}, found {:?}", view.shape()),
            });
        }
        let data = view.data();
        let mut scale_used = None;
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            // An int8 weight (`tunekit quantize`): dequantised with its per-row scales.
            Dtype::I8 => {
                let scale_name = format!("{name}_scale");
                let scales = st.tensor(&scale_name).map_err(|_| Error::Weights {
                    file: self.path.clone(),
                    tensor: scale_name.clone(),
                    message: "missing: an I8 weight needs its per-channel scales".into(),
                })?;
                let rows = shape.first().copied().unwrap_or(1).max(1);
                if scales.dtype() != Dtype::F32 || scales.shape() != [rows] {
                    return Err(Error::Weights {
                        file: self.path.clone(),
                        tensor: scale_name,
                        message: format!(
                            "expected F32 [{rows}], found {:?} {:?}",
                            scales.dtype(),
                            scales.shape()
                        ),
                    });
                }
                let s: Vec<f32> = scales
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let cols = data.len() / rows;
                scale_used = Some(scale_name);
                data.iter()
                    .enumerate()
                    .map(|(i, &b)| f32::from(b as i8) * s[i / cols.max(1)])
                    .collect()
            }
            other => {
                return Err(Error::Weights {
                    file: self.path.clone(),
                    tensor: name.to_string(),
                    message: format!("unsupported dtype {other:?} (expected F32, F16, BF16 or I8)"),
                });
            }
        };
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Weights {
                file: self.path.clone(),
                tensor: name.to_string(),
                message: format!("non-finite value at flat index {bad}"),
            });
        }
        self.used.insert(name.to_string());
        self.used.extend(scale_used);
        Ok(values)
    }

    /// Tensors in the file that loading did not use (reported, never silently ignored).
    pub fn unused(&self) -> Vec<String> {
        let Ok(st) = self.tensors() else {
            return Vec::new();
        };
        let mut names: Vec<String> = st
            .names()
            .into_iter()
            .filter(|n| !self.used.contains(*n) && !n.ends_with("position_ids"))
            .map(|s| s.to_string())
            .collect();
        names.sort();
        names
    }

    fn linear(&mut self, name: &str, d_in: usize, d_out: usize, device: &Device) -> Result<Linear> {
        // HF stores [out, in]; burn's Linear (row layout) multiplies by [in, out].
        let w = self.read(&format!("{name}.weight"), &[d_out, d_in])?;
        let w = transpose(&w, d_out, d_in);
        let b = self.read(&format!("{name}.bias"), &[d_out])?;
        Ok(Linear {
            weight: param_from(
                &format!("{name}.weight"),
                TensorData::new(w, [d_in, d_out]),
                device,
            ),
            bias: Some(param1_from(
                &format!("{name}.bias"),
                TensorData::new(b, [d_out]),
                device,
            )),
        })
    }

    fn layer_norm(&mut self, name: &str, d: usize, eps: f64, device: &Device) -> Result<LayerNorm> {
        let g = self.read(&format!("{name}.weight"), &[d])?;
        let b = self.read(&format!("{name}.bias"), &[d])?;
        let mut ln = LayerNormConfig::new(d).with_epsilon(eps).init(device);
        ln.gamma = param1_from(&format!("{name}.weight"), TensorData::new(g, [d]), device);
        ln.beta = Some(param1_from(
            &format!("{name}.bias"),
            TensorData::new(b, [d]),
            device,
        ));
        Ok(ln)
    }

    fn embedding(
        &mut self,
        name: &str,
        rows: usize,
        d: usize,
        device: &Device,
    ) -> Result<Embedding> {
        let w = self.read(&format!("{name}.weight"), &[rows, d])?;
        Ok(Embedding {
            weight: param_from(
                &format!("{name}.weight"),
                TensorData::new(w, [rows, d]),
                device,
            ),
        })
    }
}

/// Transpose a row-major `rows × cols` matrix (HF `[out, in]` ↔ burn `[in, out]`).
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// A tensor in HF naming and layout: name, shape, row-major values.
pub type HfTensor = (String, Vec<usize>, Vec<f32>);

/// Dropout probabilities to build the model with (`None` = the config's values).
#[derive(Debug, Clone, Copy, Default)]
pub struct DropoutOverride {
    /// Hidden and classifier dropout.
    pub hidden: Option<f64>,
    /// Attention-probability dropout.
    pub attention: Option<f64>,
}

/// What happened to the head while loading: reported to the user, never silent.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The classifier was freshly initialised (no head in the file, or a different class count).
    pub classifier_initialized: bool,
    /// The pooler was freshly initialised (the file has none).
    pub pooler_initialized: bool,
    /// Tensors in the file that the model does not use.
    pub unused_tensors: Vec<String>,
}

/// Load the encoder from `file` (encoder tensors with or without the `bert.` prefix).
pub fn load_bert(
    file: &mut WeightFile,
    config: &BertConfig,
    drop: DropoutOverride,
    device: &Device,
) -> Result<Bert> {
    let h = config.hidden_size;
    let eps = config.layer_norm_eps;
    let hidden_p = drop.hidden.unwrap_or(config.hidden_dropout_prob);
    let attn_p = drop
        .attention
        .unwrap_or(config.attention_probs_dropout_prob);
    let p = |s: &str| file.encoder_name(s);
    let (we, pe, te, eln) = (
        p(names::WORD_EMBEDDINGS),
        p(names::POSITION_EMBEDDINGS),
        p(names::TOKEN_TYPE_EMBEDDINGS),
        p(names::EMBEDDINGS_LAYER_NORM),
    );
    let embeddings = Embeddings {
        word_embeddings: file.embedding(&we, config.vocab_size, h, device)?,
        position_embeddings: file.embedding(&pe, config.max_position_embeddings, h, device)?,
        token_type_embeddings: file.embedding(&te, config.type_vocab_size, h, device)?,
        layer_norm: file.layer_norm(&eln, h, eps, device)?,
        dropout: dropout(hidden_p),
    };
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = file.encoder_name(&layer_prefix(i));
        let lin = |role| format!("{l}.{}", names::linear_module(role));
        // Width of the attention projections: smaller than `h` when heads were pruned.
        let heads = config.heads_in_layer(i);
        let a = heads * config.head_dim();
        let attention = Attention {
            query: file.linear(&lin(LinearRole::Query), h, a, device)?,
            key: file.linear(&lin(LinearRole::Key), h, a, device)?,
            value: file.linear(&lin(LinearRole::Value), h, a, device)?,
            output: file.linear(&lin(LinearRole::AttentionOutput), a, h, device)?,
            layer_norm: file.layer_norm(
                &format!("{l}.{}", names::ATTENTION_LAYER_NORM),
                h,
                eps,
                device,
            )?,
            attention_dropout: dropout(attn_p),
            dropout: dropout(hidden_p),
            num_heads: heads,
        };
        layers.push(Layer {
            attention,
            intermediate: file.linear(
                &lin(LinearRole::Intermediate),
                h,
                config.intermediate_size,
                device,
            )?,
            output: file.linear(
                &lin(LinearRole::Output),
                config.intermediate_size,
                h,
                device,
            )?,
            layer_norm: file.layer_norm(
                &format!("{l}.{}", names::OUTPUT_LAYER_NORM),
                h,
                eps,
                device,
            )?,
            dropout: dropout(hidden_p),
            activation: activation_for(config),
        });
    }
    Ok(Bert {
        embeddings,
        layers,
        lora_dropout: 0.0,
        layer_norm_eps: eps,
        precision: super::bf16::Precision::F32,
        int8: None,
    })
}

/// Normal(0, std) values, as HF initialises new heads (`initializer_range` = 0.02).
fn normal(n: usize, std: f64, rng: &mut StdRng) -> Vec<f32> {
    use rand::Rng;
    (0..n)
        .map(|_| {
            // Box–Muller; u1 in (0, 1] so ln is finite.
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect()
}

fn init_linear(name: &str, d_in: usize, d_out: usize, rng: &mut StdRng, device: &Device) -> Linear {
    Linear {
        weight: param_from(
            &format!("{name}.weight"),
            TensorData::new(normal(d_in * d_out, 0.02, rng), [d_in, d_out]),
            device,
        ),
        bias: Some(param1_from(
            &format!("{name}.bias"),
            TensorData::new(vec![0.0f32; d_out], [d_out]),
            device,
        )),
    }
}

/// Options for building a [`SequenceClassifier`] from a model directory's weights.
#[derive(Debug, Clone)]
pub struct ClassifierSpec {
    /// Number of classes.
    pub num_labels: usize,
    /// Pooling.
    pub pooling: Pooling,
    /// Dropout overrides.
    pub dropout: DropoutOverride,
    /// Seed for freshly initialised head weights.
    pub seed: u64,
    /// If true, a head in the file with another class count is an error (evaluation); if
    /// false it is replaced by a fresh head and reported (fine-tuning from a checkpoint).
    pub require_head: bool,
}

/// Build a classifier: encoder from `path`, pooler and classifier from the file when present
/// with the right shapes, otherwise freshly initialised (and reported in [`LoadReport`]).
pub fn load_classifier(
    path: &Path,
    config: &BertConfig,
    spec: &ClassifierSpec,
    device: &Device,
) -> Result<(SequenceClassifier, LoadReport)> {
    let mut file = WeightFile::open(path)?;
    let bert = load_bert(&mut file, config, spec.dropout, device)?;
    let h = config.hidden_size;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut report = LoadReport::default();

    let pooler_name = file.encoder_name(names::POOLER);
    let pooler = if spec.pooling == Pooling::Cls {
        if file.has(&format!("{pooler_name}.weight")) {
            Some(Pooler {
                dense: file.linear(&pooler_name, h, h, device)?,
            })
        } else {
            report.pooler_initialized = true;
            Some(Pooler {
                dense: init_linear(
                    &format!("{}{}", names::PREFIX, names::POOLER),
                    h,
                    h,
                    &mut rng,
                    device,
                ),
            })
        }
    } else {
        None
    };

    let head_shape_ok = {
        let st = file.tensors()?;
        match st.tensor("classifier.weight") {
            Ok(v) => {
                if v.shape() == [spec.num_labels, h] {
                    Some(true)
                } else {
                    Some(false)
                }
            }
            Err(_) => None,
        }
    };
    let classifier = match head_shape_ok {
        Some(true) => file.linear("classifier", h, spec.num_labels, device)?,
        Some(false) if spec.require_head => {
            // Let `read` produce the precise shape error.
            file.linear("classifier", h, spec.num_labels, device)?
        }
        None if spec.require_head => {
            return Err(Error::Weights {
                file: path.to_path_buf(),
                tensor: "classifier.weight".into(),
                message: "missing: this model has no classification head (fine-tune it first)"
                    .into(),
            });
        }
        _ => {
            report.classifier_initialized = true;
            init_linear("classifier", h, spec.num_labels, &mut rng, device)
        }
    };
    report.unused_tensors = file.unused();
    let hidden_p = spec.dropout.hidden.unwrap_or(config.hidden_dropout_prob);
    Ok((
        SequenceClassifier {
            bert,
            pooler,
            dropout: dropout(hidden_p),
            classifier,
            pooling: spec.pooling,
        },
        report,
    ))
}

fn linear_to_hf(out: &mut Vec<HfTensor>, name: &str, l: &Linear) -> Result<()> {
    let [d_in, d_out] = l.weight.val().dims();
    let w = to_vec(l.weight.val())?;
    out.push((
        format!("{name}.weight"),
        vec![d_out, d_in],
        transpose(&w, d_in, d_out),
    ));
    if let Some(b) = &l.bias {
        out.push((format!("{name}.bias"), vec![d_out], to_vec(b.val())?));
    }
    Ok(())
}

fn ln_to_hf(out: &mut Vec<HfTensor>, name: &str, l: &LayerNorm) -> Result<()> {
    let g = to_vec(l.gamma.val())?;
    out.push((format!("{name}.weight"), vec![g.len()], g));
    if let Some(b) = &l.beta {
        let b = to_vec(b.val())?;
        out.push((format!("{name}.bias"), vec![b.len()], b));
    }
    Ok(())
}

fn emb_to_hf(out: &mut Vec<HfTensor>, name: &str, e: &Embedding) -> Result<()> {
    let dims = e.weight.val().dims();
    out.push((
        format!("{name}.weight"),
        dims.to_vec(),
        to_vec(e.weight.val())?,
    ));
    Ok(())
}

/// Read a tensor back as f32 values.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Engine(format!("{e:?}")))
}

/// All tensors of the model with HF `BertForSequenceClassification` names, shapes and layouts.
pub fn classifier_tensors(model: &SequenceClassifier) -> Result<Vec<HfTensor>> {
    let mut out = Vec::new();
    let bert = &model.bert;
    let p = bert.prefix();
    let e = &bert.embeddings;
    for (name, table) in [
        (names::WORD_EMBEDDINGS, &e.word_embeddings),
        (names::POSITION_EMBEDDINGS, &e.position_embeddings),
        (names::TOKEN_TYPE_EMBEDDINGS, &e.token_type_embeddings),
    ] {
        emb_to_hf(&mut out, &format!("{p}{name}"), table)?;
    }
    ln_to_hf(
        &mut out,
        &format!("{p}{}", names::EMBEDDINGS_LAYER_NORM),
        &e.layer_norm,
    )?;
    let linear = |out: &mut Vec<HfTensor>, i: usize, role: LinearRole| {
        linear_to_hf(
            out,
            &format!("{p}{}", bert.linear_name(i, role)),
            bert.linear(i, role),
        )
    };
    for (i, layer) in bert.layers.iter().enumerate() {
        let l = format!("{p}{}", layer_prefix(i));
        for role in [
            LinearRole::Query,
            LinearRole::Key,
            LinearRole::Value,
            LinearRole::AttentionOutput,
        ] {
            linear(&mut out, i, role)?;
        }
        ln_to_hf(
            &mut out,
            &format!("{l}.{}", names::ATTENTION_LAYER_NORM),
            &layer.attention.layer_norm,
        )?;
        linear(&mut out, i, LinearRole::Intermediate)?;
        linear(&mut out, i, LinearRole::Output)?;
        ln_to_hf(
            &mut out,
            &format!("{l}.{}", names::OUTPUT_LAYER_NORM),
            &layer.layer_norm,
        )?;
    }
    head_to_hf(&mut out, model)?;
    Ok(out)
}

/// The head's tensors (pooler, if any, and classifier) with HF names and layouts.
pub fn head_to_hf(out: &mut Vec<HfTensor>, model: &SequenceClassifier) -> Result<()> {
    if let Some(p) = &model.pooler {
        linear_to_hf(
            out,
            &format!("{}{}", names::PREFIX, names::POOLER),
            &p.dense,
        )?;
    }
    linear_to_hf(out, "classifier", &model.classifier)
}

/// Write the model as HF `model.safetensors` atomically (temp file + rename).
pub fn save_classifier(model: &SequenceClassifier, path: &Path) -> Result<()> {
    write_safetensors(classifier_tensors(model)?, path)
}

/// Write f32 tensors as a safetensors file atomically (temp file + rename).
pub fn write_safetensors(tensors: Vec<HfTensor>, path: &Path) -> Result<()> {
    write_safetensors_raw(
        tensors
            .into_iter()
            .map(|(n, s, v)| {
                (
                    n,
                    Dtype::F32,
                    s,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect(),
        path,
    )
}

/// A tensor as stored: name, dtype, shape, little-endian bytes.
pub type RawTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// Write tensors of any dtype (e.g. int8 weights with f32 scales) as safetensors, atomically.
pub fn write_safetensors_raw(tensors: Vec<RawTensor>, path: &Path) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Engine(format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let data = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Engine(format!("serialising {}: {e}", path.display())))?;
    crate::fsutil::write_atomic(path, &data)
}

/// Names and shapes (HF layout) of a BERT encoder's tensors, without the `bert.` prefix.
pub fn encoder_shapes(config: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (config.hidden_size, config.intermediate_size);
    let w = |name: &str| format!("{name}.weight");
    let mut out = vec![
        (w(names::WORD_EMBEDDINGS), vec![config.vocab_size, h]),
        (
            w(names::POSITION_EMBEDDINGS),
            vec![config.max_position_embeddings, h],
        ),
        (
            w(names::TOKEN_TYPE_EMBEDDINGS),
            vec![config.type_vocab_size, h],
        ),
        (w(names::EMBEDDINGS_LAYER_NORM), vec![h]),
        (format!("{}.bias", names::EMBEDDINGS_LAYER_NORM), vec![h]),
    ];
    for l in 0..config.num_hidden_layers {
        for role in LinearRole::ALL {
            let shape = match role {
                LinearRole::Intermediate => vec![i, h],
                LinearRole::Output => vec![h, i],
                _ => vec![h, h],
            };
            let name = names::linear(l, role);
            out.push((format!("{name}.bias"), vec![shape[0]]));
            out.push((format!("{name}.weight"), shape));
        }
        let p = layer_prefix(l);
        for ln in [names::ATTENTION_LAYER_NORM, names::OUTPUT_LAYER_NORM] {
            out.push((format!("{p}.{ln}.weight"), vec![h]));
            out.push((format!("{p}.{ln}.bias"), vec![h]));
        }
    }
    out.push((w(names::POOLER), vec![h, h]));
    out.push((format!("{}.bias", names::POOLER), vec![h]));
    out
}

/// Write a randomly initialised BERT encoder (HF init: normal(0, 0.02) weights, zero biases,
/// unit LayerNorm) as `model.safetensors`. Used to make small real models for tests and for
/// training from scratch.
pub fn write_random_encoder(config: &BertConfig, path: &Path, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = encoder_shapes(config)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values = if name.ends_with("LayerNorm.weight") {
                vec![1.0f32; n]
            } else if name.ends_with(".bias") || name.ends_with("LayerNorm.bias") {
                vec![0.0f32; n]
            } else {
                normal(n, 0.02, &mut rng)
            };
            (
                name,
                shape,
                values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Engine(format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let data = safetensors::serialize(views, None)
        .map_err(|e| Error::Engine(format!("serialising {}: {e}", path.display())))?;
    crate::fsutil::write_atomic(path, &data)
}
