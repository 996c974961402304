//! Building a [`Llama`] from a Hugging Face directory (`config.json` + safetensors) or a GGUF
//! file. Both go through one builder that asks a [`TensorSource`] for tensors by their HF names;
//! the GGUF source maps them to llama.cpp's names (`blk.{i}.attn_q.weight`, …) and undoes the
//! q/k row permutation llama.cpp's converter applies to `llama` models (as transformers does
//! when it loads a GGUF: `reverse_permute_weights`).

use std::path::Path;

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;

use super::{Llama, LlamaConfig, LlamaLayer};
use crate::error::{Error, Result};
use crate::model::gguf::{GgufError, GgufFile};
use crate::model::weights::{WeightFile, find_weights, transpose};

/// Where the builder reads tensors from, by HF name (`model.layers.0.self_attn.q_proj.weight`).
pub trait TensorSource {
    /// Whether the tensor exists.
    fn has(&self, name: &str) -> bool;
    /// The tensor as f32, row-major; an error names it when it is missing or not `shape`.
    fn read(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

impl TensorSource for WeightFile {
    fn has(&self, name: &str) -> bool {
        WeightFile::has(self, name)
    }
    fn read(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        WeightFile::read(self, name, shape)
    }
}

/// A GGUF file seen through HF names.
pub struct GgufSource<'a> {
    file: &'a GgufFile,
    /// Undo llama.cpp's rotary permutation of q/k rows (`llama` architecture only).
    unpermute: bool,
    heads: usize,
    kv_heads: usize,
}

/// The GGUF name of an HF decoder tensor name, if it has one.
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (i, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{i}.{g}.{suffix}"))
}

/// Inverse of llama.cpp's `permute(w, n_head)`: GGUF row `h·d + 2i + t` is HF row
/// `h·d + t·d/2 + i` (`d` rows per head, `t` ∈ {0, 1}).
pub fn unpermute_rows(w: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols.max(1);
    let d = rows / n_head.max(1);
    let half = d / 2;
    let mut out = vec![0.0f32; w.len()];
    for hd in 0..n_head {
        for i in 0..half {
            for t in 0..2 {
                let src = (hd * d + 2 * i + t) * cols;
                let dst = (hd * d + t * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

impl TensorSource for GgufSource<'_> {
    fn has(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|g| self.file.tensor_info(&g).is_some())
    }

    fn read(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let g = gguf_name(name).ok_or_else(|| GgufError::Tensor {
            path: self.file.path().to_path_buf(),
            tensor: name.into(),
            message: "has no GGUF name".into(),
        })?;
        let (got, values) = self.file.tensor_f32(&g)?;
        if got != shape {
            return Err(GgufError::Tensor {
                path: self.file.path().to_path_buf(),
                tensor: g,
                message: format!("shape {got:?}, expected {shape:?} (HF `{name}`)"),
            }
            .into());
        }
        let heads = if name.ends_with("q_proj.weight") {
            self.heads
        } else if name.ends_with("k_proj.weight") {
            self.kv_heads
        } else {
            0
        };
        if self.unpermute && heads > 0 {
            let cols = shape.get(1).copied().unwrap_or(1);
            return Ok(unpermute_rows(&values, heads, cols));
        }
        Ok(values)
    }
}

/// [`LlamaConfig`] from a GGUF file's metadata (`{arch}.block_count`, …). Architectures
/// `llama`, `qwen2`, `qwen3`; others are refused by name.
pub fn config_from_gguf(f: &GgufFile) -> Result<LlamaConfig> {
    let arch = f.get_str("general.architecture")?.to_string();
    let (attention_bias, qk_norm) = match arch.as_str() {
        "llama" => (false, false),
        "qwen2" => (true, false),
        "qwen3" => (false, true),
        other => {
            return Err(Error::Model(format!(
                "{}: GGUF architecture `{other}` is not supported (llama, qwen2, qwen3)",
                f.path().display()
            )));
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = f.get_usize(&key("embedding_length"))?;
    let heads = f.get_usize(&key("attention.head_count"))?;
    let kv_heads = match f.metadata.get(&key("attention.head_count_kv")) {
        Some(_) => f.get_usize(&key("attention.head_count_kv"))?,
        None => heads,
    };
    let head_dim = match f.metadata.get(&key("attention.key_length")) {
        Some(_) => f.get_usize(&key("attention.key_length"))?,
        None => hidden / heads.max(1),
    };
    let vocab_size = match f.metadata.get(&key("vocab_size")) {
        Some(_) => f.get_usize(&key("vocab_size"))?,
        None => f.get_strings("tokenizer.ggml.tokens")?.len(),
    };
    let rope_theta = match f.metadata.get(&key("rope.freq_base")) {
        Some(_) => f.get_f64(&key("rope.freq_base"))?,
        None => 10000.0,
    };
    if let Some(n) = f
        .metadata
        .get(&key("rope.dimension_count"))
        .and_then(|v| v.as_u64())
        && n as usize != head_dim
    {
        return Err(Error::Model(format!(
            "{}: {arch}.rope.dimension_count {n} differs from head_dim {head_dim} (partial rotary is not supported)",
            f.path().display()
        )));
    }
    if let Some(kind) = f
        .metadata
        .get(&key("rope.scaling.type"))
        .and_then(|v| v.as_str())
        .filter(|k| *k != "none")
    {
        return Err(Error::Model(format!(
            "{}: {arch}.rope.scaling.type `{kind}` is not supported (only unscaled rope)",
            f.path().display()
        )));
    }
    let config = LlamaConfig {
        model_type: arch.clone(),
        vocab_size,
        hidden_size: hidden,
        intermediate_size: f.get_usize(&key("feed_forward_length"))?,
        num_hidden_layers: f.get_usize(&key("block_count"))?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rms_norm_eps: f.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
        rope_theta,
        max_position_embeddings: f.get_usize(&key("context_length")).unwrap_or(2048),
        tie_word_embeddings: f.tensor_info("output.weight").is_none(),
        attention_bias,
        qk_norm,
    };
    check(&config, &f.path().display().to_string())?;
    Ok(config)
}

fn check(c: &LlamaConfig, what: &str) -> Result<()> {
    let ok = c.num_attention_heads > 0
        && c.num_key_value_heads > 0
        && c.num_attention_heads.is_multiple_of(c.num_key_value_heads)
        && c.head_dim.is_multiple_of(2)
        && c.head_dim > 0
        && c.hidden_size > 0
        && c.vocab_size > 0;
    if ok {
        Ok(())
    } else {
        Err(Error::Model(format!(
            "{what}: inconsistent decoder config: {} heads, {} key/value heads, head_dim {}, hidden {}, vocab {}",
            c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.hidden_size, c.vocab_size
        )))
    }
}

/// [`LlamaConfig`] from a transformers `config.json` (`model_type` llama, mistral, qwen2,
/// qwen3). Rope scaling other than the default is refused.
pub fn config_from_hf(path: &Path) -> Result<LlamaConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
    let what = path.display().to_string();
    let usize_key = |k: &str| -> Result<usize> {
        v.get(k)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| Error::Model(format!("{what}: `{k}` missing or not an integer")))
    };
    let model_type = v
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (bias_default, qk_norm) = match model_type.as_str() {
        "llama" | "mistral" => (false, false),
        "qwen2" => (true, false),
        "qwen3" => (false, true),
        other => {
            return Err(Error::Model(format!(
                "{what}: decoder model_type `{other}` is not supported (llama, mistral, qwen2, qwen3)"
            )));
        }
    };
    let rope = v.get("rope_parameters").or_else(|| v.get("rope_scaling"));
    if let Some(kind) = rope
        .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
        .and_then(Value::as_str)
        .filter(|k| *k != "default")
    {
        return Err(Error::Model(format!(
            "{what}: rope type `{kind}` is not supported (only the default rope)"
        )));
    }
    let rope_theta = v
        .get("rope_theta")
        .or_else(|| rope.and_then(|r| r.get("rope_theta")))
        .and_then(Value::as_f64)
        .unwrap_or(10000.0);
    let hidden = usize_key("hidden_size")?;
    let heads = usize_key("num_attention_heads")?;
    let config = LlamaConfig {
        vocab_size: usize_key("vocab_size")?,
        hidden_size: hidden,
        intermediate_size: usize_key("intermediate_size")?,
        num_hidden_layers: usize_key("num_hidden_layers")?,
        num_attention_heads: heads,
        num_key_value_heads: usize_key("num_key_value_heads").unwrap_or(heads),
        head_dim: usize_key("head_dim").unwrap_or(hidden / heads.max(1)),
        rms_norm_eps: v
            .get("rms_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-6),
        rope_theta,
        max_position_embeddings: usize_key("max_position_embeddings").unwrap_or(2048),
        tie_word_embeddings: v
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        attention_bias: v
            .get("attention_bias")
            .and_then(Value::as_bool)
            .unwrap_or(bias_default),
        qk_norm,
        model_type,
    };
    check(&config, &what)?;
    Ok(config)
}

/// Trainable on an autodiff device (as every loaded weight: LoRA freezes what it does not
/// train), with the name-derived id that checkpoints and adapters key on.
fn param2(name: &str, v: Vec<f32>, shape: [usize; 2], device: &Device) -> Param<Tensor<2>> {
    crate::model::weights::param_from(name, TensorData::new(v, shape), device)
}

fn param1(name: &str, v: Vec<f32>, device: &Device) -> Param<Tensor<1>> {
    let n = v.len();
    crate::model::weights::param1_from(name, TensorData::new(v, [n]), device)
}

fn linear(
    src: &mut dyn TensorSource,
    name: &str,
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &Device,
) -> Result<Linear> {
    let w = src.read(&format!("{name}.weight"), &[d_out, d_in])?;
    let weight = param2(
        &format!("{name}.weight"),
        transpose(&w, d_out, d_in),
        [d_in, d_out],
        device,
    );
    let bias = if bias {
        let b = src.read(&format!("{name}.bias"), &[d_out])?;
        Some(param1(&format!("{name}.bias"), b, device))
    } else {
        None
    };
    Ok(Linear { weight, bias })
}

/// Build the model from `src` (HF names), checking every shape against `config`.
pub fn build(config: LlamaConfig, src: &mut dyn TensorSource, device: &Device) -> Result<Llama> {
    let c = &config;
    let (hid, d) = (c.hidden_size, c.head_dim);
    let (q_out, kv_out) = (c.num_attention_heads * d, c.num_key_value_heads * d);
    let emb = src.read("model.embed_tokens.weight", &[c.vocab_size, hid])?;
    let embed_tokens = Embedding {
        weight: param2(
            "model.embed_tokens.weight",
            emb,
            [c.vocab_size, hid],
            device,
        ),
    };
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let norm = |src: &mut dyn TensorSource, n: &str, width: usize| -> Result<_> {
            let name = format!("{p}.{n}.weight");
            Ok(param1(&name, src.read(&name, &[width])?, device))
        };
        let b = c.attention_bias;
        layers.push(LlamaLayer {
            input_layernorm: norm(src, "input_layernorm", hid)?,
            q_proj: linear(src, &format!("{p}.self_attn.q_proj"), hid, q_out, b, device)?,
            k_proj: linear(
                src,
                &format!("{p}.self_attn.k_proj"),
                hid,
                kv_out,
                b,
                device,
            )?,
            v_proj: linear(
                src,
                &format!("{p}.self_attn.v_proj"),
                hid,
                kv_out,
                b,
                device,
            )?,
            o_proj: linear(
                src,
                &format!("{p}.self_attn.o_proj"),
                q_out,
                hid,
                false,
                device,
            )?,
            q_norm: c
                .qk_norm
                .then(|| norm(src, "self_attn.q_norm", d))
                .transpose()?,
            k_norm: c
                .qk_norm
                .then(|| norm(src, "self_attn.k_norm", d))
                .transpose()?,
            post_attention_layernorm: norm(src, "post_attention_layernorm", hid)?,
            gate_proj: linear(
                src,
                &format!("{p}.mlp.gate_proj"),
                hid,
                c.intermediate_size,
                false,
                device,
            )?,
            up_proj: linear(
                src,
                &format!("{p}.mlp.up_proj"),
                hid,
                c.intermediate_size,
                false,
                device,
            )?,
            down_proj: linear(
                src,
                &format!("{p}.mlp.down_proj"),
                c.intermediate_size,
                hid,
                false,
                device,
            )?,
        });
    }
    let norm = param1(
        "model.norm.weight",
        src.read("model.norm.weight", &[hid])?,
        device,
    );
    let lm_head = if c.tie_word_embeddings && !src.has("lm_head.weight") {
        None
    } else {
        Some(linear(src, "lm_head", hid, c.vocab_size, false, device)?)
    };
    Ok(Llama {
        embed_tokens,
        layers,
        norm,
        lm_head,
        config,
    })
}

/// Load a GGUF decoder: the model (tensors dequantised to f32) and the parsed file (for the
/// tokenizer and chat template in its metadata).
pub fn load_gguf(path: &Path, device: &Device) -> Result<(Llama, GgufFile)> {
    let file = GgufFile::open(path)?;
    let config = config_from_gguf(&file)?;
    let mut src = GgufSource {
        file: &file,
        unpermute: config.model_type == "llama",
        heads: config.num_attention_heads,
        kv_heads: config.num_key_value_heads,
    };
    let model = build(config, &mut src, device)?;
    Ok((model, file))
}

/// Load a decoder from a transformers directory (`config.json` and `model.safetensors`, sharded
/// safetensors or `pytorch_model.bin`).
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<Llama> {
    let config = config_from_hf(&dir.join("config.json"))?;
    let weights = find_weights(dir).ok_or_else(|| {
        Error::Model(format!(
            "{}: no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)",
            dir.display()
        ))
    })?;
    let mut src = WeightFile::open(&weights)?;
    build(config, &mut src, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, d/2, cols).swapaxes(1, 2).reshape(rows, cols).
        let (n_head, d, cols) = (3, 4, 2);
        let hf: Vec<f32> = (0..n_head * d * cols).map(|x| x as f32).collect();
        let mut permuted = vec![0.0; hf.len()];
        for h in 0..n_head {
            for t in 0..2 {
                for i in 0..d / 2 {
                    let src = (h * d + t * (d / 2) + i) * cols;
                    let dst = (h * d + i * 2 + t) * cols;
                    permuted[dst..dst + cols].copy_from_slice(&hf[src..src + cols]);
                }
            }
        }
        assert_ne!(permuted, hf);
        assert_eq!(unpermute_rows(&permuted, n_head, cols), hf);
    }

    #[test]
    fn hf_names_map_to_llama_cpp_names() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.q_proj.weight").as_deref(),
            Some("blk.12.attn_q.weight")
        );
        assert_eq!(
            gguf_name("model.layers.0.post_attention_layernorm.weight").as_deref(),
            Some("blk.0.ffn_norm.weight")
        );
        assert_eq!(gguf_name("model.layers.0.mystery.weight"), None);
    }
}
