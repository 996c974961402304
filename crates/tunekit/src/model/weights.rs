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
    dropout,
};
use super::config::BertConfig;
use super::family::Family;
use crate::error::{Error, Result};

/// A parameter id derived from the HF tensor name (FNV-1a), stable across processes. The
/// family prefix (`bert.`, `roberta.`, …) is ignored, so a model loaded from a base encoder
/// (no prefix) and from a tunekit checkpoint (HF classifier names, with prefix) gets the same
/// ids.
pub fn param_id(name: &str) -> ParamId {
    let name = Family::ALL
        .iter()
        .find_map(|f| name.strip_prefix(f.names().prefix))
        .unwrap_or(name);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ParamId::from(h)
}

/// A trainable parameter (gradient required on an autodiff device) named `name` (its id is
/// [`param_id`]) holding `data`.
pub(crate) fn param_from(name: &str, data: TensorData, device: &Device) -> Param<Tensor<2>> {
    let (_, value, mapper) = Param::<Tensor<2>>::from_data(data, device).consume();
    Param::from_mapped_value(param_id(name), value, mapper)
}

/// [`param_from`] for a vector.
pub(crate) fn param1_from(name: &str, data: TensorData, device: &Device) -> Param<Tensor<1>> {
    let (_, value, mapper) = Param::<Tensor<1>>::from_data(data, device).consume();
    Param::from_mapped_value(param_id(name), value, mapper)
}

/// One stored tensor: element type, shape, little-endian bytes.
struct Stored {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// The tensors of a model's weights, decoded to f32 on demand, with every access checked.
/// Reads `model.safetensors`, a sharded `model.safetensors.index.json` (every shard its
/// `weight_map` names) and PyTorch's `pytorch_model.bin` (with burn's pickle reader, no
/// Python).
pub struct WeightFile {
    path: PathBuf,
    tensors: std::collections::BTreeMap<String, Stored>,
    /// Name prefix found in the file (`""` or the family's, `"bert."`) for encoder tensors.
    prefix: String,
    used: BTreeSet<String>,
}

/// The weights file of a model directory: `model.safetensors`, else the sharded index
/// `model.safetensors.index.json`, else `pytorch_model.bin`; `None` when it has none.
pub fn find_weights(dir: &Path) -> Option<PathBuf> {
    [
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
    ]
    .into_iter()
    .map(|f| dir.join(f))
    .find(|p| p.is_file())
}

impl WeightFile {
    /// Open and index a weights file of a BERT model; a truncated or corrupt file is an
    /// error naming it.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_for(path, Family::Bert)
    }

    /// Open and index a weights file of a `family` model (encoder tensors with or without the
    /// family's prefix): safetensors, a sharded safetensors index (`*.index.json`) or a
    /// PyTorch pickle (`*.bin`, `*.pt`, `*.pth`).
    pub fn open_for(path: &Path, family: Family) -> Result<Self> {
        let names = family.names();
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let tensors = if file_name.ends_with(".index.json") {
            read_sharded(path)?
        } else if [".bin", ".pt", ".pth"]
            .iter()
            .any(|e| file_name.ends_with(e))
        {
            read_pytorch(path)?
        } else {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            read_safetensors(path, &bytes)?
        };
        let probe = format!("{}{}", names.prefix, names.word_embeddings);
        let prefix = if tensors.keys().any(|n| n.starts_with(&probe)) {
            names.prefix.to_string()
        } else {
            String::new()
        };
        Ok(WeightFile {
            path: path.to_path_buf(),
            tensors,
            prefix,
            used: BTreeSet::new(),
        })
    }

    /// The file's path (the index for sharded weights).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Shape of tensor `name`, if the file has it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// Whether the file has tensor `name` (its full name in the file).
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Every tensor name of the file, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// Number of parameters: elements of every floating-point tensor (integer buffers such
    /// as `position_ids` are not parameters).
    pub fn parameter_count(&self) -> usize {
        self.tensors
            .values()
            .filter(|t| !matches!(t.dtype, Dtype::I64 | Dtype::I32))
            .map(|t| t.shape.iter().product::<usize>())
            .sum()
    }

    /// Full name of an encoder tensor in this file.
    pub fn encoder_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Read tensor `name` as f32, checking it has exactly `shape`.
    pub fn read(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let view = self.tensors.get(name).ok_or_else(|| Error::Weights {
            file: self.path.clone(),
            tensor: name.to_string(),
            message: "missing from the file".into(),
        })?;
        if view.shape != shape {
            return Err(Error::Weights {
                file: self.path.clone(),
                tensor: name.to_string(),
                message: format!("expected shape {shape:?}, found {:?}", view.shape),
            });
        }
        let data = &view.data;
        let mut scale_used = None;
        let values: Vec<f32> = match view.dtype {
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
                let scales = self
                    .tensors
                    .get(&scale_name)
                    .ok_or_else(|| Error::Weights {
                        file: self.path.clone(),
                        tensor: scale_name.clone(),
                        message: "missing: an I8 weight needs its per-channel scales".into(),
                    })?;
                let rows = shape.first().copied().unwrap_or(1).max(1);
                if scales.dtype != Dtype::F32 || scales.shape != [rows] {
                    return Err(Error::Weights {
                        file: self.path.clone(),
                        tensor: scale_name,
                        message: format!(
                            "expected F32 [{rows}], found {:?} {:?}",
                            scales.dtype, scales.shape
                        ),
                    });
                }
                let s: Vec<f32> = scales
                    .data
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
        self.tensors
            .keys()
            .filter(|n| !self.used.contains(*n) && !n.ends_with("position_ids"))
            .cloned()
            .collect()
    }

    /// Linear module `name` (`.weight` HF `[out, in]`, `.bias`), in burn's `[in, out]` layout.
    pub fn linear(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &Device,
    ) -> Result<Linear> {
        self.linear_with(name, d_in, d_out, true, device)
    }

    /// Linear module `name` with a `.bias` tensor when `bias` (PyTorch's `nn.Linear(…,
    /// bias=False)` has none: ModernBERT), in burn's `[in, out]` layout.
    pub fn linear_with(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &Device,
    ) -> Result<Linear> {
        // HF stores [out, in]; burn's Linear (row layout) multiplies by [in, out].
        let w = self.read(&format!("{name}.weight"), &[d_out, d_in])?;
        let w = transpose(&w, d_out, d_in);
        let bias = if bias {
            let b = self.read(&format!("{name}.bias"), &[d_out])?;
            Some(param1_from(
                &format!("{name}.bias"),
                TensorData::new(b, [d_out]),
                device,
            ))
        } else {
            None
        };
        Ok(Linear {
            weight: param_from(
                &format!("{name}.weight"),
                TensorData::new(w, [d_in, d_out]),
                device,
            ),
            bias,
        })
    }

    /// LayerNorm `name` (`.weight`, `.bias`) of width `d`.
    pub fn layer_norm(
        &mut self,
        name: &str,
        d: usize,
        eps: f64,
        device: &Device,
    ) -> Result<LayerNorm> {
        self.layer_norm_with(name, d, eps, true, device)
    }

    /// LayerNorm `name` with a `.bias` tensor when `bias` (PyTorch's `nn.LayerNorm(…,
    /// bias=False)` has none: ModernBERT's `norm_bias = false`).
    pub fn layer_norm_with(
        &mut self,
        name: &str,
        d: usize,
        eps: f64,
        bias: bool,
        device: &Device,
    ) -> Result<LayerNorm> {
        let g = self.read(&format!("{name}.weight"), &[d])?;
        let mut ln = LayerNormConfig::new(d)
            .with_epsilon(eps)
            .with_bias(bias)
            .init(device);
        ln.gamma = param1_from(&format!("{name}.weight"), TensorData::new(g, [d]), device);
        ln.beta = if bias {
            let b = self.read(&format!("{name}.bias"), &[d])?;
            Some(param1_from(
                &format!("{name}.bias"),
                TensorData::new(b, [d]),
                device,
            ))
        } else {
            None
        };
        Ok(ln)
    }

    /// Embedding table `name` (`.weight`, `[rows, d]`).
    pub fn embedding(
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

/// Every tensor of a safetensors file's bytes.
fn read_safetensors(
    path: &Path,
    bytes: &[u8],
) -> Result<std::collections::BTreeMap<String, Stored>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Weights {
        file: path.to_path_buf(),
        tensor: "<header>".into(),
        message: format!("not a readable safetensors file (truncated or corrupt?): {e}"),
    })?;
    Ok(st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                Stored {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    data: view.data().to_vec(),
                },
            )
        })
        .collect())
}

/// Every tensor of a sharded safetensors checkpoint: the shards its index's `weight_map`
/// names (next to the index), each read once; a tensor the map puts in a shard that lacks it
/// is an error naming both.
fn read_sharded(index: &Path) -> Result<std::collections::BTreeMap<String, Stored>> {
    let json: serde_json::Value = crate::fsutil::read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Weights {
            file: index.to_path_buf(),
            tensor: "weight_map".into(),
            message: "missing: a sharded checkpoint's index maps every tensor to its shard".into(),
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: BTreeSet<String> = BTreeSet::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| Error::Weights {
            file: index.to_path_buf(),
            tensor: tensor.clone(),
            message: "its shard is not a file name".into(),
        })?;
        if shard.contains('/') || shard.contains('\\') {
            return Err(Error::Weights {
                file: index.to_path_buf(),
                tensor: tensor.clone(),
                message: format!("shard {shard:?} is not a file next to the index"),
            });
        }
        shards.insert(shard.to_string());
    }
    let mut out = std::collections::BTreeMap::new();
    for shard in &shards {
        let path = dir.join(shard);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        out.extend(read_safetensors(&path, &bytes)?);
    }
    for (tensor, shard) in map {
        if !out.contains_key(tensor) {
            return Err(Error::Weights {
                file: dir.join(shard.as_str().unwrap_or_default()),
                tensor: tensor.clone(),
                message: format!("missing, but {} puts it in this shard", index.display()),
            });
        }
    }
    Ok(out)
}

/// Every tensor of a PyTorch checkpoint (`torch.save` of a state dict: ZIP, legacy or TAR
/// container), read with burn's `pytorch-reader` (no Python), as little-endian bytes.
fn read_pytorch(path: &Path) -> Result<std::collections::BTreeMap<String, Stored>> {
    use pytorch_reader::DType as P;
    let bad = |tensor: &str, message: String| Error::Weights {
        file: path.to_path_buf(),
        tensor: tensor.to_string(),
        message,
    };
    let reader = pytorch_reader::PytorchReader::new(path).map_err(|e| {
        bad(
            "<pickle>",
            format!("not a readable PyTorch checkpoint: {e}"),
        )
    })?;
    let mut out = std::collections::BTreeMap::new();
    for (name, tensor) in reader.tensors() {
        let dtype = match tensor.dtype() {
            P::F32 => Dtype::F32,
            P::F16 => Dtype::F16,
            P::BF16 => Dtype::BF16,
            P::F64 => Dtype::F64,
            P::I64 => Dtype::I64,
            P::I32 => Dtype::I32,
            P::I8 => Dtype::I8,
            P::U8 | P::Bool => Dtype::U8,
            P::I16 | P::U16 | P::U32 | P::U64 => {
                return Err(bad(name, format!("unsupported dtype {:?}", tensor.dtype())));
            }
        };
        let mut data = tensor.read().map_err(|e| bad(name, e.to_string()))?;
        if cfg!(target_endian = "big") {
            let size = tensor.dtype().size();
            for chunk in data.chunks_exact_mut(size) {
                chunk.reverse();
            }
        }
        // F64 tensors (rare in checkpoints) are stored as F32 so that `read` decodes them.
        let (dtype, data) = if dtype == Dtype::F64 {
            let v: Vec<u8> = data
                .chunks_exact(8)
                .flat_map(|c| {
                    let x = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                    (x as f32).to_le_bytes()
                })
                .collect();
            (Dtype::F32, v)
        } else {
            (dtype, data)
        };
        out.insert(
            name.clone(),
            Stored {
                dtype,
                shape: tensor.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
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

/// Load the encoder of `config`'s architecture from the weights file at `path` (a base
/// model or a task model; a head in the file is ignored).
pub fn load_encoder(
    path: &Path,
    config: &BertConfig,
    drop: DropoutOverride,
    device: &Device,
) -> Result<super::Encoder> {
    let mut file = WeightFile::open_for(path, config.family())?;
    encoder_from(&mut file, config, drop, device)
}

/// The encoder of `config`'s architecture from `file`: the one place that maps a family to
/// the modules that run it.
pub fn encoder_from(
    file: &mut WeightFile,
    config: &BertConfig,
    drop: DropoutOverride,
    device: &Device,
) -> Result<super::Encoder> {
    Ok(match config.family() {
        Family::DebertaV2 => {
            super::Encoder::DebertaV2(super::deberta_v2::load::load(file, config, drop, device)?)
        }
        Family::ModernBert => {
            super::Encoder::ModernBert(super::modernbert::load(file, config, drop, device)?)
        }
        _ => super::Encoder::Bert(load_bert(file, config, drop, device)?),
    })
}

/// Load a BERT-shaped encoder of `config`'s family from `file` (encoder tensors with or
/// without the family prefix), with the family's names ([`super::family::Names`]).
pub fn load_bert(
    file: &mut WeightFile,
    config: &BertConfig,
    drop: DropoutOverride,
    device: &Device,
) -> Result<Bert> {
    let names = config.family().names();
    let h = config.hidden_size;
    let e = config.embedding_width();
    let eps = config.layer_norm_eps;
    let hidden_p = drop.hidden.unwrap_or(config.hidden_dropout_prob);
    let attn_p = drop
        .attention
        .unwrap_or(config.attention_probs_dropout_prob);
    let prefix = file.prefix.clone();
    let p = |s: &str| format!("{prefix}{s}");
    let (we, pe, eln) = (
        p(names.word_embeddings),
        p(names.position_embeddings),
        p(names.embeddings_layer_norm),
    );
    let token_type_embeddings = match names.token_type_embeddings {
        Some(te) => Some(file.embedding(&p(te), config.type_vocab_size, e, device)?),
        None => None,
    };
    let project = match names.embeddings_project {
        Some(name) if e != h => Some(file.linear(&p(name), e, h, device)?),
        _ => None,
    };
    let embeddings = Embeddings {
        word_embeddings: file.embedding(&we, config.vocab_size, e, device)?,
        position_embeddings: file.embedding(&pe, config.max_position_embeddings, e, device)?,
        token_type_embeddings,
        layer_norm: file.layer_norm(&eln, e, eps, device)?,
        project,
        dropout: dropout(hidden_p),
        positions: names.positions,
        padding_idx: config.padding_idx(),
    };
    let relative_attention_bias = match names.relative_attention_bias {
        Some(name) => {
            let full = p(name);
            let rows = file
                .shape(&format!("{full}.weight"))
                .and_then(|s| s.first().copied())
                .unwrap_or(super::mpnet::BUCKETS);
            if rows < super::mpnet::BUCKETS {
                return Err(Error::Weights {
                    file: file.path.clone(),
                    tensor: format!("{full}.weight"),
                    message: format!(
                        "has {rows} buckets; MPNet's position bias uses {}",
                        super::mpnet::BUCKETS
                    ),
                });
            }
            Some(file.embedding(&full, rows, config.num_attention_heads, device)?)
        }
        None => None,
    };
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = file.encoder_name(&names.layer_prefix(i));
        let lin = |role| format!("{l}.{}", names.linear_module(role));
        // Width of the attention projections: smaller than `h` when heads were pruned.
        let heads = config.heads_in_layer(i);
        let a = heads * config.head_dim();
        let attention = Attention {
            query: file.linear(&lin(LinearRole::Query), h, a, device)?,
            key: file.linear(&lin(LinearRole::Key), h, a, device)?,
            value: file.linear(&lin(LinearRole::Value), h, a, device)?,
            output: file.linear(&lin(LinearRole::AttentionOutput), a, h, device)?,
            layer_norm: file.layer_norm(
                &format!("{l}.{}", names.attention_layer_norm),
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
                &format!("{l}.{}", names.output_layer_norm),
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
        relative_attention_bias,
        family: config.family(),
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

pub(crate) fn init_linear(
    name: &str,
    d_in: usize,
    d_out: usize,
    rng: &mut StdRng,
    device: &Device,
) -> Linear {
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

/// Which head a model gets on top of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// One output vector per sequence (HF `…ForSequenceClassification`: the family's
    /// pooler/dense layer with `cls` pooling, then its output linear).
    #[default]
    Sequence,
    /// One output vector per token (HF `…ForTokenClassification`: dropout and `classifier`
    /// on every hidden state, no pooler).
    Token,
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
    /// Sequence or token head.
    pub head: HeadKind,
}

/// HF module names of a model's head: the dense layer before the output (with its full name,
/// the family prefix included when it belongs to the base model), and the output linear.
pub fn head_names(names: &super::family::Names, head: HeadKind) -> (String, &'static str) {
    let h = &names.sequence_head;
    let dense = if h.dense_in_base {
        format!("{}{}", names.prefix, h.dense)
    } else {
        h.dense.to_string()
    };
    match head {
        HeadKind::Sequence => (dense, h.out),
        HeadKind::Token => (dense, "classifier"),
    }
}

/// Build a classifier: encoder from `path`, pooler and classifier from the file when present
/// with the right shapes, otherwise freshly initialised (and reported in [`LoadReport`]).
pub fn load_classifier(
    path: &Path,
    config: &BertConfig,
    spec: &ClassifierSpec,
    device: &Device,
) -> Result<(SequenceClassifier, LoadReport)> {
    let family = config.family();
    let names = family.names();
    let mut file = WeightFile::open_for(path, family)?;
    let encoder = encoder_from(&mut file, config, spec.dropout, device)?;
    let h = config.hidden_size;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut report = LoadReport::default();
    let (dense_name, out_name) = head_names(names, spec.head);

    let head = &names.sequence_head;
    let pooler = if (spec.pooling == Pooling::Cls && spec.head == HeadKind::Sequence)
        || head.prediction_head
    {
        // The dense layer as the file names it (a base model's pooler may be unprefixed).
        let in_file = if names.sequence_head.dense_in_base {
            file.encoder_name(names.sequence_head.dense)
        } else {
            dense_name.clone()
        };
        // Biases and activation: the family's table, and ModernBERT's config options
        // (`classifier_bias`, `norm_bias`, `classifier_activation`).
        let (dense_bias, norm_bias, activation) = match family {
            Family::ModernBert => super::modernbert::head_layout(config)?,
            _ => (true, true, head.activation),
        };
        let in_file_norm = head.norm.filter(|n| file.has(&format!("{n}.weight")));
        let dense = if file.has(&format!("{in_file}.weight")) {
            file.linear_with(&in_file, h, h, dense_bias, device)?
        } else {
            report.pooler_initialized = true;
            let mut dense = init_linear(&dense_name, h, h, &mut rng, device);
            if !dense_bias {
                dense.bias = None;
            }
            dense
        };
        let eps = config.layer_norm_eps;
        let norm = match (head.norm, in_file_norm) {
            (_, Some(n)) => Some(file.layer_norm_with(n, h, eps, norm_bias, device)?),
            (Some(n), None) => {
                // A fresh LayerNorm (unit scale, zero bias), as PyTorch initialises one; the
                // ids are those of its HF names.
                report.pooler_initialized = true;
                let mut ln = LayerNormConfig::new(h)
                    .with_epsilon(eps)
                    .with_bias(norm_bias)
                    .init(device);
                ln.gamma = param1_from(
                    &format!("{n}.weight"),
                    TensorData::new(vec![1.0f32; h], [h]),
                    device,
                );
                if norm_bias {
                    ln.beta = Some(param1_from(
                        &format!("{n}.bias"),
                        TensorData::new(vec![0.0f32; h], [h]),
                        device,
                    ));
                }
                Some(ln)
            }
            (None, None) => None,
        };
        Some(Pooler {
            dense,
            activation,
            dropout_before: head.dropout_before_dense,
            norm,
            prediction_head: head.prediction_head,
        })
    } else {
        None
    };

    let weight_name = format!("{out_name}.weight");
    let head_shape_ok = file.shape(&weight_name).map(|s| s == [spec.num_labels, h]);
    let classifier = match head_shape_ok {
        Some(true) => file.linear(out_name, h, spec.num_labels, device)?,
        Some(false) if spec.require_head => {
            // Let `read` produce the precise shape error.
            file.linear(out_name, h, spec.num_labels, device)?
        }
        None if spec.require_head => {
            return Err(Error::Weights {
                file: path.to_path_buf(),
                tensor: weight_name,
                message: "missing: this model has no classification head (fine-tune it first)"
                    .into(),
            });
        }
        _ => {
            report.classifier_initialized = true;
            init_linear(out_name, h, spec.num_labels, &mut rng, device)
        }
    };
    report.unused_tensors = file.unused();
    let hidden_p = spec.dropout.hidden.unwrap_or(config.hidden_dropout_prob);
    Ok((
        SequenceClassifier {
            encoder,
            pooler,
            dropout: dropout(hidden_p),
            classifier,
            pooling: spec.pooling,
            head: spec.head,
        },
        report,
    ))
}

pub(crate) fn linear_to_hf(out: &mut Vec<HfTensor>, name: &str, l: &Linear) -> Result<()> {
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

pub(crate) fn ln_to_hf(out: &mut Vec<HfTensor>, name: &str, l: &LayerNorm) -> Result<()> {
    let g = to_vec(l.gamma.val())?;
    out.push((format!("{name}.weight"), vec![g.len()], g));
    if let Some(b) = &l.beta {
        let b = to_vec(b.val())?;
        out.push((format!("{name}.bias"), vec![b.len()], b));
    }
    Ok(())
}

pub(crate) fn emb_to_hf(out: &mut Vec<HfTensor>, name: &str, e: &Embedding) -> Result<()> {
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

/// All tensors of the model with its family's HF task-model names (`BertForSequenceClassification`,
/// `RobertaForTokenClassification`, …), shapes and layouts.
pub fn classifier_tensors(model: &SequenceClassifier) -> Result<Vec<HfTensor>> {
    let mut out = Vec::new();
    match &model.encoder {
        super::Encoder::Bert(bert) => bert_tensors(&mut out, bert)?,
        super::Encoder::DebertaV2(m) => super::deberta_v2::load::to_hf(&mut out, m)?,
        super::Encoder::ModernBert(m) => super::modernbert::tensors(&mut out, m)?,
    }
    head_to_hf(&mut out, model)?;
    Ok(out)
}

/// A BERT-shaped encoder's tensors with its family's HF names (prefix included).
fn bert_tensors(out: &mut Vec<HfTensor>, bert: &Bert) -> Result<()> {
    let names = bert.names();
    let p = bert.prefix();
    let e = &bert.embeddings;
    emb_to_hf(
        out,
        &format!("{p}{}", names.word_embeddings),
        &e.word_embeddings,
    )?;
    emb_to_hf(
        out,
        &format!("{p}{}", names.position_embeddings),
        &e.position_embeddings,
    )?;
    if let (Some(name), Some(table)) = (names.token_type_embeddings, &e.token_type_embeddings) {
        emb_to_hf(out, &format!("{p}{name}"), table)?;
    }
    ln_to_hf(
        out,
        &format!("{p}{}", names.embeddings_layer_norm),
        &e.layer_norm,
    )?;
    if let (Some(name), Some(project)) = (names.embeddings_project, &e.project) {
        linear_to_hf(out, &format!("{p}{name}"), project)?;
    }
    if let (Some(name), Some(table)) =
        (names.relative_attention_bias, &bert.relative_attention_bias)
    {
        emb_to_hf(out, &format!("{p}{name}"), table)?;
    }
    let linear = |out: &mut Vec<HfTensor>, i: usize, role: LinearRole| {
        linear_to_hf(
            out,
            &format!("{p}{}", bert.linear_name(i, role)),
            bert.linear(i, role),
        )
    };
    for (i, layer) in bert.layers.iter().enumerate() {
        let l = format!("{p}{}", names.layer_prefix(i));
        for role in [
            LinearRole::Query,
            LinearRole::Key,
            LinearRole::Value,
            LinearRole::AttentionOutput,
        ] {
            linear(out, i, role)?;
        }
        ln_to_hf(
            out,
            &format!("{l}.{}", names.attention_layer_norm),
            &layer.attention.layer_norm,
        )?;
        linear(out, i, LinearRole::Intermediate)?;
        linear(out, i, LinearRole::Output)?;
        ln_to_hf(
            out,
            &format!("{l}.{}", names.output_layer_norm),
            &layer.layer_norm,
        )?;
    }
    Ok(())
}

/// The head's tensors (pooler / dense layer, if any, and the output linear) with the family's
/// HF names and layouts.
pub fn head_to_hf(out: &mut Vec<HfTensor>, model: &SequenceClassifier) -> Result<()> {
    let (dense, classifier) = head_names(model.encoder.names(), model.head);
    if let Some(p) = &model.pooler {
        linear_to_hf(out, &dense, &p.dense)?;
        if let (Some(name), Some(norm)) = (model.encoder.names().sequence_head.norm, &p.norm) {
            ln_to_hf(out, name, norm)?;
        }
    }
    linear_to_hf(out, classifier, &model.classifier)
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

/// Names and shapes (HF layout) of a BERT-shaped encoder's tensors in `config`'s family
/// (without the family prefix), its pooler included when the family has one.
pub fn encoder_shapes(config: &BertConfig) -> Vec<(String, Vec<usize>)> {
    if config.family() == Family::DebertaV2 {
        return super::deberta_v2::load::encoder_shapes(config);
    }
    if config.family() == Family::ModernBert {
        return super::modernbert::encoder_shapes(config);
    }
    let names = config.family().names();
    let (h, i) = (config.hidden_size, config.intermediate_size);
    let e = config.embedding_width();
    let w = |name: &str| format!("{name}.weight");
    let b = |name: &str| format!("{name}.bias");
    let mut out = vec![
        (w(names.word_embeddings), vec![config.vocab_size, e]),
        (
            w(names.position_embeddings),
            vec![config.max_position_embeddings, e],
        ),
    ];
    if let Some(t) = names.token_type_embeddings {
        out.push((w(t), vec![config.type_vocab_size, e]));
    }
    out.push((w(names.embeddings_layer_norm), vec![e]));
    out.push((b(names.embeddings_layer_norm), vec![e]));
    if let Some(p) = names.embeddings_project.filter(|_| e != h) {
        out.push((w(p), vec![h, e]));
        out.push((b(p), vec![h]));
    }
    if let Some(r) = names.relative_attention_bias {
        out.push((
            w(r),
            vec![super::mpnet::BUCKETS, config.num_attention_heads],
        ));
    }
    for l in 0..config.num_hidden_layers {
        for role in LinearRole::ALL {
            let shape = match role {
                LinearRole::Intermediate => vec![i, h],
                LinearRole::Output => vec![h, i],
                _ => vec![h, h],
            };
            let name = names.linear(l, role);
            out.push((b(&name), vec![shape[0]]));
            out.push((w(&name), shape));
        }
        let p = names.layer_prefix(l);
        for ln in [names.attention_layer_norm, names.output_layer_norm] {
            out.push((format!("{p}.{ln}.weight"), vec![h]));
            out.push((format!("{p}.{ln}.bias"), vec![h]));
        }
    }
    if let Some(pooler) = names.pooler {
        out.push((w(pooler), vec![h, h]));
        out.push((b(pooler), vec![h]));
    }
    out
}

/// Whether an HF tensor name is a LayerNorm's (`LayerNorm`, `sa_layer_norm`, …).
fn is_layer_norm(name: &str) -> bool {
    name.contains("LayerNorm") || name.contains("layer_norm")
}

/// Write a randomly initialised BERT-shaped encoder of `config`'s family (HF init: normal(0, 0.02) weights, zero biases,
/// unit LayerNorm) as `model.safetensors`. Used to make small real models for tests and for
/// training from scratch.
pub fn write_random_encoder(config: &BertConfig, path: &Path, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = encoder_shapes(config)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values = if is_layer_norm(&name) && name.ends_with(".weight") {
                vec![1.0f32; n]
            } else if name.ends_with(".bias") {
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
